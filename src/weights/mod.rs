//! Weights on disk: every network saves and loads as safetensors under the names of its fields
//! (see each model's module docs); pretrained VGG files are read from safetensors or from
//! PyTorch's `.pth` (zip or legacy pickle), with torchvision's keys mapped in [`vgg_key_candidates`].
//!
//! A file is checked against the network before anything is applied: a missing tensor, a wrong
//! shape or dtype, or a file that is not a weights file is an [`Error`] naming the file and key.
//! Writes go to a temporary file that is synced and renamed, so a crash never leaves half a file.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{Module, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::TensorData;
use burn_store::{ModuleSnapshot, TensorSnapshot};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::model::{Vgg, VggLayout};

mod strides;

/// The tensors and metadata of one weights file, as f32.
#[derive(Debug)]
pub struct TensorFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorData>,
    /// String metadata (safetensors header `__metadata__`; empty for `.pth`).
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads a safetensors or PyTorch (`.pth`/`.pt`) file, recognised by its content.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        if bytes.starts_with(b"PK\x03\x04") || bytes.first() == Some(&0x80) {
            return read_pytorch(path);
        }
        read_safetensors(path, &bytes)
    }

    /// Parses safetensors `bytes` (e.g. a model embedded in the binary); `name` stands for the
    /// path in errors.
    pub fn from_safetensors_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        read_safetensors(Path::new(name), bytes)
    }

    fn not_found(&self, key: &str) -> Error {
        let stem = key.rsplit('.').next().unwrap_or(key);
        let mut near: Vec<&str> = self
            .tensors
            .keys()
            .filter(|k| k.ends_with(stem))
            .map(String::as_str)
            .take(3)
            .collect();
        near.sort();
        let hint = if near.is_empty() {
            String::new()
        } else {
            format!("; for instance {}", near.join(", "))
        };
        Error::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
            found: self.tensors.len(),
            hint,
        }
    }
}

fn read_safetensors(path: &Path, bytes: &[u8]) -> Result<TensorFile> {
    let not_weights = |reason: String| Error::NotWeights {
        path: path.to_path_buf(),
        reason,
    };
    let parsed = SafeTensors::deserialize(bytes).map_err(|e| not_weights(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| not_weights(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in parsed.tensors() {
        let values = to_f32(view.dtype(), view.data()).ok_or_else(|| Error::WrongDtype {
            path: path.to_path_buf(),
            key: name.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        tensors.insert(name, TensorData::new(values, view.shape().to_vec()));
    }
    Ok(TensorFile {
        path: path.to_path_buf(),
        tensors,
        metadata: header.metadata().clone().unwrap_or_default(),
    })
}

fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    let chunks = |n: usize| data.chunks_exact(n);
    Some(match dtype {
        Dtype::F32 => chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => chunks(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::F16 => chunks(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => chunks(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

fn read_pytorch(path: &Path) -> Result<TensorFile> {
    let reader = burn_store::pytorch::PytorchReader::new(path).map_err(|e| Error::NotWeights {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let not_weights = |reason: String| Error::NotWeights {
        path: path.to_path_buf(),
        reason,
    };
    let layouts = strides::tensor_layouts(path)
        .map_err(|e| not_weights(format!("cannot read the tensor strides: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, snapshot) in reader.into_tensors() {
        let data = snapshot
            .to_data()
            .map_err(|e| not_weights(format!("tensor `{name}`: {e:?}")))?
            .convert::<f32>();
        let data = match layouts.get(&name).filter(|l| !l.is_contiguous()) {
            Some(layout) => {
                let values = data.into_vec::<f32>().unwrap_or_default();
                let ordered = layout.gather(&values).ok_or_else(|| {
                    not_weights(format!(
                        "tensor `{name}` is a view beyond its stored values"
                    ))
                })?;
                TensorData::new(ordered, layout.shape.clone())
            }
            None => data,
        };
        tensors.insert(name, data);
    }
    Ok(TensorFile {
        path: path.to_path_buf(),
        tensors,
        metadata: HashMap::new(),
    })
}

/// Saves every tensor of `module` (parameters and spectral-norm vectors) as f32 safetensors,
/// with `metadata` in the header, atomically.
pub fn save<B: Backend, M: ModuleSnapshot<B>>(
    module: &M,
    path: &Path,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for snapshot in module.collect(None, None, true) {
        let name = snapshot.full_path();
        let data = snapshot.to_data().map_err(|e| Error::NotWeights {
            path: path.to_path_buf(),
            reason: format!("tensor `{name}` could not be read: {e:?}"),
        })?;
        let values = data.convert::<f32>().into_vec::<f32>().unwrap_or_default();
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        named.push((name, snapshot.shape.to_vec(), bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = named
        .iter()
        .map(|(name, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes);
            view.map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::NotWeights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let bytes =
        safetensors::serialize(views, Some(metadata.clone())).map_err(|e| Error::NotWeights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a synced temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Loads `path` into `module`, whose tensor names and shapes the file must match exactly.
/// Returns the file's metadata.
pub fn load<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    path: &Path,
) -> Result<HashMap<String, String>> {
    let file = TensorFile::read(path)?;
    apply(module, &file, |name| vec![name.to_string()])?;
    Ok(file.metadata)
}

/// Applies the tensors of `file` to `module`; `candidates(name)` lists the file keys that may
/// hold the module's tensor `name`, the first present one wins.
pub fn apply<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    file: &TensorFile,
    candidates: impl Fn(&str) -> Vec<String>,
) -> Result<()> {
    let mut snapshots = Vec::new();
    for expected in module.collect(None, None, true) {
        let name = expected.full_path();
        let keys = candidates(&name);
        let (key, data) = keys
            .iter()
            .find_map(|k| file.tensors.get(k).map(|d| (k, d)))
            .ok_or_else(|| file.not_found(&keys[0]))?;
        if data.shape.to_vec() != expected.shape.to_vec() {
            return Err(Error::WrongShape {
                path: file.path.clone(),
                key: key.clone(),
                expected: expected.shape.to_vec(),
                found: data.shape.to_vec(),
            });
        }
        if let Some(count) = non_finite(data) {
            return Err(Error::NonFiniteWeights {
                path: file.path.clone(),
                key: key.clone(),
                count,
            });
        }
        snapshots.push(TensorSnapshot::from_data(
            data.clone(),
            expected.path_stack.clone().unwrap_or_default(),
            expected.container_stack.clone().unwrap_or_default(),
            expected.tensor_id.unwrap_or_else(ParamId::new),
        ));
    }
    let result = module.apply(snapshots, None, None, true);
    if let Some(error) = result.errors.first() {
        return Err(Error::NotWeights {
            path: file.path.clone(),
            reason: error.to_string(),
        });
    }
    Ok(())
}

/// How many values of a float tensor are NaN or infinite, if any: such weights (a run that
/// diverged, a damaged file) would turn every output into NaN, which images show as black.
fn non_finite(data: &TensorData) -> Option<usize> {
    if !data.dtype.is_float() {
        return None;
    }
    let count = data.iter::<f32>().filter(|v| !v.is_finite()).count();
    (count > 0).then_some(count)
}

/// File keys that may hold VGG tensor `convs.{i}.{weight|bias}`: ours, then torchvision's
/// `features.{j}.*` (also under a `vgg.`/`module.` prefix).
pub fn vgg_key_candidates(layout: VggLayout, name: &str) -> Vec<String> {
    let mut out = vec![name.to_string()];
    let parts: Vec<&str> = name.split('.').collect();
    if let ["convs", i, kind] = parts.as_slice() {
        if let Some(j) = i
            .parse::<usize>()
            .ok()
            .and_then(|i| layout.torchvision_indices().get(i).copied())
        {
            for prefix in ["features.", "vgg.features.", "module.features."] {
                out.push(format!("{prefix}{j}.{kind}"));
            }
        }
    }
    out
}

/// Loads pretrained VGG weights into `vgg` from torchvision's `vgg19-*.pth` (or `vgg16-*.pth`),
/// or a safetensors file with torchvision's or toonsmith's names.
pub fn load_vgg<B: Backend>(vgg: &mut Vgg<B>, path: &Path) -> Result<()> {
    let file = TensorFile::read(path)?;
    let layout = vgg.layout();
    apply(vgg, &file, |name| vgg_key_candidates(layout, name))?;
    *vgg = vgg.clone().no_grad();
    Ok(())
}
