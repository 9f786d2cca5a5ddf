//! Strides of the tensors of a PyTorch pickle.
//!
//! burn-store 0.21's reader ignores the stride argument of `torch._utils._rebuild_tensor(_v2)`
//! and reads every tensor as if it were contiguous. Files converted from TensorFlow often hold
//! permuted views (all 50 convolution kernels of `efficientnet-lite0-57934424.pth`), which then
//! come out scrambled. This module walks the state-dict pickle itself (a small pickle machine that
//! knows only the opcodes `torch.save` writes) to recover each tensor's shape, stride and storage
//! offset, so [`super::TensorFile::read`] can put the values in row-major order.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

/// How a tensor sits in its storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Size of each dimension.
    pub shape: Vec<usize>,
    /// Step in storage elements of each dimension.
    pub stride: Vec<usize>,
}

impl Layout {
    /// Whether the tensor is stored row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&size, &stride) in self.shape.iter().zip(&self.stride).rev() {
            if size > 1 && stride != expected {
                return false;
            }
            expected *= size;
        }
        true
    }

    /// `values` (the tensor's storage from its offset on) in row-major order; `None` when the
    /// view reaches past `values`.
    pub fn gather<T: Copy>(&self, values: &[T]) -> Option<Vec<T>> {
        let count: usize = self.shape.iter().product();
        let mut out = Vec::with_capacity(count);
        let mut index = vec![0usize; self.shape.len()];
        for _ in 0..count {
            let at: usize = index.iter().zip(&self.stride).map(|(i, s)| i * s).sum();
            out.push(*values.get(at)?);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < self.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Some(out)
    }
}

/// A value on the pickle machine's stack; containers are shared so that a memoised dict sees
/// the items added after it was memoised.
#[derive(Debug, Clone)]
enum Value {
    Int(i64),
    Str(String),
    Global(String),
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Tensor(Layout),
    Mark,
    Other,
}

type Parse<T> = std::result::Result<T, String>;

/// Shape and stride of every tensor of the PyTorch file at `path` (zip or legacy format), by
/// the dotted key burn-store gives it.
pub fn tensor_layouts(path: &Path) -> Parse<HashMap<String, Layout>> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(|e| e.to_string())?;
    let root = if &magic == b"PK\x03\x04" {
        let mut archive = zip::ZipArchive::new(File::open(path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let name = (0..archive.len())
            .filter_map(|i| archive.name_for_index(i).map(str::to_string))
            .find(|n| n.ends_with("data.pkl"))
            .ok_or("no data.pkl in the archive")?;
        let mut bytes = Vec::new();
        let mut entry = archive.by_name(&name).map_err(|e| e.to_string())?;
        entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        run(&mut bytes.as_slice())?
    } else {
        // Legacy format: magic number, protocol version and system info pickles come first.
        let mut reader = BufReader::new(File::open(path).map_err(|e| e.to_string())?);
        for _ in 0..3 {
            run(&mut reader)?;
        }
        run(&mut reader)?
    };
    let mut layouts = HashMap::new();
    collect(&root, &mut Vec::new(), &mut layouts);
    Ok(layouts)
}

fn collect(value: &Value, path: &mut Vec<String>, out: &mut HashMap<String, Layout>) {
    match value {
        Value::Tensor(layout) => {
            out.insert(path.join("."), layout.clone());
        }
        Value::Dict(items) => {
            for (key, item) in items.borrow().iter() {
                let key = match key {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                path.push(key);
                collect(item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn read_bytes<R: BufRead>(r: &mut R, n: usize) -> Parse<Vec<u8>> {
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

fn read_uint<R: BufRead>(r: &mut R, n: usize) -> Parse<u64> {
    let bytes = read_bytes(r, n)?;
    Ok(bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

fn read_line<R: BufRead>(r: &mut R) -> Parse<String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    Ok(line.trim_end_matches('\n').to_string())
}

fn ints(value: &Value) -> Option<Vec<usize>> {
    match value {
        Value::Tuple(items) => items
            .iter()
            .map(|v| match v {
                Value::Int(i) => usize::try_from(*i).ok(),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// `callable(*args)` for the callables a state dict uses.
fn reduce(callable: Value, args: Value) -> Value {
    let Value::Global(name) = callable else {
        return Value::Other;
    };
    let Value::Tuple(args) = args else {
        return Value::Other;
    };
    match name.as_str() {
        "collections.OrderedDict" => Value::Dict(Rc::default()),
        "torch._utils._rebuild_tensor" | "torch._utils._rebuild_tensor_v2" if args.len() >= 4 => {
            match (ints(&args[2]), ints(&args[3])) {
                (Some(shape), Some(stride)) => Value::Tensor(Layout { shape, stride }),
                _ => Value::Other,
            }
        }
        // `torch.nn.Parameter` wraps the tensor as its first argument.
        "torch._utils._rebuild_parameter" => args.first().cloned().unwrap_or(Value::Other),
        _ => Value::Other,
    }
}

struct Machine {
    stack: Vec<Value>,
    memo: HashMap<u64, Value>,
}

impl Machine {
    fn pop(&mut self) -> Parse<Value> {
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn pop_mark(&mut self) -> Parse<Vec<Value>> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or("no mark")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn tuple(&mut self, n: usize) -> Parse<()> {
        let at = self.stack.len().checked_sub(n).ok_or("stack underflow")?;
        let items = self.stack.split_off(at);
        self.stack.push(Value::Tuple(Rc::new(items)));
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Parse<()> {
        if let Some(Value::Dict(dict)) = self.stack.last() {
            let mut dict = dict.borrow_mut();
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                dict.push((k, v));
            }
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) {
        if let Some(Value::List(list)) = self.stack.last() {
            list.borrow_mut().extend(items);
        }
    }

    fn memo_top(&mut self, key: u64) -> Parse<()> {
        let top = self.stack.last().cloned().ok_or("memo of an empty stack")?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn get(&mut self, key: u64) -> Parse<()> {
        let value = self.memo.get(&key).cloned().ok_or("unknown memo key")?;
        self.stack.push(value);
        Ok(())
    }
}

/// Runs one pickle to its STOP and returns the result.
fn run<R: BufRead>(r: &mut R) -> Parse<Value> {
    let mut m = Machine {
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        let op = read_uint(r, 1)? as u8;
        match op {
            0x80 => drop(read_uint(r, 1)?), // PROTO
            0x95 => drop(read_uint(r, 8)?), // FRAME
            b'.' => return m.pop(),
            b'(' => m.stack.push(Value::Mark),
            b'N' | 0x88 | 0x89 | b'G' => {
                if op == b'G' {
                    read_bytes(r, 8)?;
                }
                m.stack.push(Value::Other);
            }
            b'J' => m
                .stack
                .push(Value::Int(read_uint(r, 4)? as u32 as i32 as i64)),
            b'K' => m.stack.push(Value::Int(read_uint(r, 1)? as i64)),
            b'M' => m.stack.push(Value::Int(read_uint(r, 2)? as i64)),
            0x8a => {
                let n = read_uint(r, 1)? as usize;
                let bytes = read_bytes(r, n)?;
                let mut v: i64 = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                    -1
                } else {
                    0
                };
                for &b in bytes.iter().rev() {
                    v = (v << 8) | i64::from(b);
                }
                m.stack.push(Value::Int(v));
            }
            b'X' | 0x8c | 0x8d | b'T' | b'U' | b'B' | b'C' | 0x8e => {
                let width = match op {
                    0x8c | b'U' | b'C' => 1,
                    0x8d | 0x8e => 8,
                    _ => 4,
                };
                let n = read_uint(r, width)? as usize;
                let bytes = read_bytes(r, n)?;
                m.stack
                    .push(Value::Str(String::from_utf8_lossy(&bytes).into_owned()));
            }
            b'c' => {
                let module = read_line(r)?;
                let name = read_line(r)?;
                m.stack.push(Value::Global(format!("{module}.{name}")));
            }
            0x93 => {
                let name = m.pop()?;
                let module = m.pop()?;
                let global = match (module, name) {
                    (Value::Str(a), Value::Str(b)) => Value::Global(format!("{a}.{b}")),
                    _ => Value::Other,
                };
                m.stack.push(global);
            }
            b'q' => m.memo_top(read_uint(r, 1)?)?,
            b'r' => m.memo_top(read_uint(r, 4)?)?,
            0x94 => m.memo_top(m.memo.len() as u64)?,
            b'h' => m.get(read_uint(r, 1)?)?,
            b'j' => m.get(read_uint(r, 4)?)?,
            b')' => m.stack.push(Value::Tuple(Rc::default())),
            b'}' => m.stack.push(Value::Dict(Rc::default())),
            b']' => m.stack.push(Value::List(Rc::default())),
            b't' => {
                let items = m.pop_mark()?;
                m.stack.push(Value::Tuple(Rc::new(items)));
            }
            b'l' => {
                let items = m.pop_mark()?;
                m.stack.push(Value::List(Rc::new(RefCell::new(items))));
            }
            0x85 => m.tuple(1)?,
            0x86 => m.tuple(2)?,
            0x87 => m.tuple(3)?,
            b's' => {
                let v = m.pop()?;
                let k = m.pop()?;
                m.set_items(vec![k, v])?;
            }
            b'u' => {
                let items = m.pop_mark()?;
                m.set_items(items)?;
            }
            b'a' => {
                let v = m.pop()?;
                m.append(vec![v]);
            }
            b'e' => {
                let items = m.pop_mark()?;
                m.append(items);
            }
            b'Q' => {
                m.pop()?;
                m.stack.push(Value::Other);
            }
            b'R' | 0x81 => {
                let args = m.pop()?;
                let callable = m.pop()?;
                m.stack.push(reduce(callable, args));
            }
            b'b' => drop(m.pop()?), // BUILD: state (e.g. `_metadata`) is not needed
            other => return Err(format!("unsupported pickle opcode 0x{other:02x}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permuted_layout_is_gathered_row_major() {
        // A 2x3 matrix stored transposed: storage [a00 a10 a01 a11 a02 a12].
        let layout = Layout {
            shape: vec![2, 3],
            stride: vec![1, 2],
        };
        assert!(!layout.is_contiguous());
        let storage = [0, 10, 1, 11, 2, 12];
        assert_eq!(layout.gather(&storage).unwrap(), vec![0, 1, 2, 10, 11, 12]);
        let contiguous = Layout {
            shape: vec![2, 1, 3],
            stride: vec![3, 7, 1],
        };
        assert!(contiguous.is_contiguous());
        let past_end = Layout {
            shape: vec![2],
            stride: vec![9],
        };
        assert_eq!(past_end.gather(&storage), None);
    }
}
