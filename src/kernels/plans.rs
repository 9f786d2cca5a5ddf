//! Convolution plans ([`Plan`]: the weights laid out for their algorithm, Winograd transforms
//! or packed panels) kept between calls for weights that do not change: the frozen VGG19 of
//! the content loss in training (its forward on the photo and on G's cartoon, and its input
//! gradients), and every weight in inference, image after image. A plan is cheap next to a
//! large image's convolution but not next to a small one with many channels: VGG's 512 -> 512
//! 3x3 at 32x32 (a 256x256 batch of two) spent 19 ms of its ~40 ms making 37.7 MB of F(4x4)
//! weights, nine such plans per training step, 250-300 ms per step in all plans.
//!
//! A plan is found by its convolution (the caller's shape and stride, and whether it is the
//! input gradient's convolution with the flipped weight) and by the caller's weight and bias
//! values themselves, compared bit for bit: a weight that changed, or another weight of the
//! same shape, is a miss, never another weight's plan. Only a weight seen twice is kept (its
//! values' hash recorded the first time): a caller that declares as frozen a weight that
//! changes between calls (D's weights while G trains, updated by every D step) never fills the
//! cache. The least recently used plans go first past the budget ([`budget_for`]: 1 GiB, or an
//! eighth of the memory available when the process first keeps a plan, whichever is less).

use std::sync::{Arc, LazyLock, Mutex};

use super::calls;
use super::conv::{ConvShape, Plan};

/// The bytes of plans kept at most (VGG19's plans to conv4_4 for a 256x256 batch, forward
/// and input gradient, take about 400 MB; G's at one image size about 30 MB).
pub(crate) const BUDGET: usize = 1 << 30;

/// The budget of the process's plans with `available` bytes of memory (`None`: not known):
/// [`BUDGET`], or an eighth of what is available where that is less, so that on a small
/// machine the kept plans (a speed-up, never a need: a plan not kept is made again) do not
/// take the memory the images need. With 4 GB available VGG19's plans still fit.
pub(crate) fn budget_for(available: Option<u64>) -> usize {
    let eighth = available.map_or(BUDGET as u64, |bytes| bytes / 8);
    eighth.min(BUDGET as u64) as usize
}

/// How many hashes of values seen once are remembered (the oldest forgotten first). A hash
/// collision only keeps a plan one use early: plans are matched by their values.
const SEEN: usize = 512;

/// What a plan is made from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key<'a> {
    /// The caller's convolution (before any stride-2 phases).
    pub shape: ConvShape,
    /// Its stride.
    pub stride: usize,
    /// Whether the plan is the input gradient's convolution (flipped, transposed weight).
    pub input_grad: bool,
    /// The caller's weight `[C_out, C_in, k, k]`.
    pub weight: &'a [f32],
    /// The caller's bias.
    pub bias: Option<&'a [f32]>,
}

impl Key<'_> {
    /// Whether `self` and `other` are the same convolution (not yet their values).
    fn same_problem(&self, other: &Key) -> bool {
        self.shape == other.shape
            && self.stride == other.stride
            && self.input_grad == other.input_grad
            && self.weight.len() == other.weight.len()
            && self.bias.map(<[f32]>::len) == other.bias.map(<[f32]>::len)
    }

    /// Whether `self` and `other` have the same problem and the same values, bit for bit.
    fn matches(&self, other: &Key) -> bool {
        let bias_same = match (self.bias, other.bias) {
            (Some(a), Some(b)) => same_bits(a, b),
            (None, None) => true,
            _ => false,
        };
        self.same_problem(other) && same_bits(self.weight, other.weight) && bias_same
    }

    /// A 64-bit hash of the problem and the values (FNV-style over the values' bits).
    fn hash(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut mix = |v: u64| h = (h ^ v).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
        let s = &self.shape;
        for v in [s.c_in, s.c_out, s.h, s.w, s.k, s.pad, self.stride] {
            mix(v as u64);
        }
        mix(self.input_grad as u64);
        for values in [self.weight, self.bias.unwrap_or(&[])] {
            mix(values.len() as u64);
            for pair in values.chunks(2) {
                let lo = pair[0].to_bits() as u64;
                mix(lo | (pair.get(1).map_or(0, |v| v.to_bits() as u64) << 32));
            }
        }
        h
    }
}

/// Whether `a` and `b` hold the same bits (runs of 64 compared without a branch, so they
/// vectorise).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    let same = |(x, y): (&[f32], &[f32])| {
        x.iter()
            .zip(y)
            .fold(true, |same, (p, q)| same & (p.to_bits() == q.to_bits()))
    };
    a.len() == b.len() && a.chunks(64).zip(b.chunks(64)).all(same)
}

/// A kept plan and the values it was made from.
struct Entry {
    key: OwnedKey,
    plan: Arc<Plan>,
    bytes: usize,
    last_used: u64,
}

/// A [`Key`] with its own copy of the values.
struct OwnedKey {
    shape: ConvShape,
    stride: usize,
    input_grad: bool,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl OwnedKey {
    fn of(key: &Key) -> Self {
        Self {
            shape: key.shape,
            stride: key.stride,
            input_grad: key.input_grad,
            weight: key.weight.to_vec(),
            bias: key.bias.map(<[f32]>::to_vec),
        }
    }

    fn borrow(&self) -> Key<'_> {
        Key {
            shape: self.shape,
            stride: self.stride,
            input_grad: self.input_grad,
            weight: &self.weight,
            bias: self.bias.as_deref(),
        }
    }
}

/// Plans kept within a budget of bytes, least recently used first out.
pub(crate) struct Cache {
    budget: usize,
    entries: Vec<Entry>,
    /// Hashes of keys seen once, most recent last.
    seen: Vec<u64>,
    clock: u64,
}

impl Cache {
    pub(crate) const fn new(budget: usize) -> Self {
        Self {
            budget,
            entries: Vec::new(),
            seen: Vec::new(),
            clock: 0,
        }
    }

    /// The kept plan of `key`'s values, if any.
    fn get(&mut self, key: &Key) -> Option<Arc<Plan>> {
        self.clock += 1;
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.key.borrow().matches(key))?;
        entry.last_used = self.clock;
        Some(Arc::clone(&entry.plan))
    }

    /// Whether `key`'s values were seen before (if not, remembers them now).
    fn seen_before(&mut self, key: &Key) -> bool {
        let hash = key.hash();
        if let Some(i) = self.seen.iter().position(|&h| h == hash) {
            self.seen.remove(i);
            return true;
        }
        if self.seen.len() == SEEN {
            self.seen.remove(0);
        }
        self.seen.push(hash);
        false
    }

    /// Keeps `plan` for `key`, dropping the least recently used plans past the budget.
    fn insert(&mut self, key: &Key, plan: Arc<Plan>) {
        let bytes = plan.bytes() + 4 * (key.weight.len() + key.bias.map_or(0, <[f32]>::len));
        if bytes > self.budget {
            return;
        }
        while self.bytes() + bytes > self.budget {
            let oldest = (0..self.entries.len()).min_by_key(|&i| self.entries[i].last_used);
            self.entries
                .swap_remove(oldest.expect("over the budget, so something is kept"));
        }
        self.clock += 1;
        self.entries.push(Entry {
            key: OwnedKey::of(key),
            plan,
            bytes,
            last_used: self.clock,
        });
    }

    /// The bytes kept.
    fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// Offers `plan`, just made for `key`: kept if `key`'s values were seen before (and not
    /// kept meanwhile by another thread).
    fn offer(&mut self, key: &Key, plan: &Arc<Plan>) {
        if self.get(key).is_none() && self.seen_before(key) {
            self.insert(key, Arc::clone(plan));
        }
    }
}

/// The process's plans, within the budget of the memory available when the first plan is
/// offered.
static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| {
    let available = crate::infer::memory::available_bytes();
    Mutex::new(Cache::new(budget_for(available)))
});

/// The plan of `key`: made by `make` for this call alone unless `frozen` (the caller's weight
/// and bias do not change from call to call), else from the process's [`Cache`].
///
/// The lock is not held while `make` runs: two threads that miss together both make the
/// plan (the same one), and the first to offer it keeps it.
pub(crate) fn plan(key: Key, frozen: bool, make: impl FnOnce() -> Plan) -> Arc<Plan> {
    let what = if key.input_grad {
        "plan of input grad"
    } else {
        "plan"
    };
    let make = || calls::time(|| calls::label(what, &key.shape, key.stride, 1), make);
    if !frozen {
        return Arc::new(make());
    }
    kept_plan(&CACHE, &key, make)
}

/// The plan of `key` from `cache`, else made by `make` and offered to it ([`Cache::offer`]).
/// The lock is not held while `make` runs.
fn kept_plan(cache: &Mutex<Cache>, key: &Key, make: impl FnOnce() -> Plan) -> Arc<Plan> {
    let lock = || {
        cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    if let Some(plan) = lock().get(key) {
        return plan;
    }
    let plan = Arc::new(make());
    lock().offer(key, &plan);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::available;
    use crate::kernels::test_values::values;

    const SHAPE: ConvShape = ConvShape {
        c_in: 3,
        c_out: 5,
        h: 9,
        w: 11,
        k: 3,
        pad: 1,
    };

    fn key(weight: &[f32]) -> Key<'_> {
        Key {
            shape: SHAPE,
            stride: 1,
            input_grad: false,
            weight,
            bias: None,
        }
    }

    /// The plan of `key` from `cache` ([`kept_plan`]), and whether it had to be made.
    fn lookup(cache: &Mutex<Cache>, key: &Key) -> (Arc<Plan>, bool) {
        let mut made = false;
        let plan = kept_plan(cache, key, || {
            made = true;
            Plan::new(key.weight, key.bias, &key.shape)
        });
        (plan, made)
    }

    #[test]
    fn a_weight_is_kept_from_its_second_use_and_only_for_its_own_values() {
        if !available() {
            eprintln!("no AVX-512 or AVX2 here: not tested");
            return;
        }
        let cache = Mutex::new(Cache::new(BUDGET));
        let w = values(5 * 3 * 9, 1);
        let made: Vec<bool> = (0..3).map(|_| lookup(&cache, &key(&w)).1).collect();
        assert_eq!(made, [true, true, false], "kept from the second use on");
        // One bit of the last value changed: another weight.
        let mut w2 = w.clone();
        w2[w.len() - 1] = f32::from_bits(w2[w.len() - 1].to_bits() ^ 1);
        assert!(lookup(&cache, &key(&w2)).1);
        let with_bias = Key {
            bias: Some(&[0.0; 5]),
            ..key(&w)
        };
        assert!(lookup(&cache, &with_bias).1);
        let strided = Key {
            stride: 2,
            ..key(&w)
        };
        assert!(lookup(&cache, &strided).1);
        assert!(
            !lookup(&cache, &key(&w)).1,
            "the first weight is still kept"
        );
    }

    #[test]
    fn the_budget_is_an_eighth_of_the_available_memory_up_to_a_gib() {
        let gib = 1u64 << 30;
        assert_eq!(budget_for(Some(2 * gib)), 256 << 20);
        assert_eq!(budget_for(Some(8 * gib)), BUDGET);
        assert_eq!(budget_for(Some(64 * gib)), BUDGET);
        assert_eq!(budget_for(Some(0)), 0);
        assert_eq!(budget_for(None), BUDGET);
    }

    #[test]
    fn the_least_recently_used_plan_goes_first_past_the_budget() {
        if !available() {
            eprintln!("no AVX-512 or AVX2 here: not tested");
            return;
        }
        let weights: Vec<Vec<f32>> = (0..3).map(|i| values(5 * 3 * 9, i << 20)).collect();
        let one = {
            let plan = Plan::new(&weights[0], None, &SHAPE);
            plan.bytes() + 4 * weights[0].len()
        };
        let cache = Mutex::new(Cache::new(2 * one));
        for w in &weights[..2] {
            lookup(&cache, &key(w));
            lookup(&cache, &key(w));
        }
        // Weight 0 used last, so weight 1 makes room for weight 2.
        assert!(!lookup(&cache, &key(&weights[0])).1);
        lookup(&cache, &key(&weights[2]));
        lookup(&cache, &key(&weights[2]));
        let mut cache = cache.into_inner().unwrap();
        assert_eq!(cache.bytes(), 2 * one);
        let kept: Vec<bool> = weights
            .iter()
            .map(|w| cache.get(&key(w)).is_some())
            .collect();
        assert_eq!(kept, [true, false, true]);
    }

    #[test]
    fn a_weight_that_is_not_frozen_is_never_kept() {
        if !available() {
            eprintln!("no AVX-512 or AVX2 here: not tested");
            return;
        }
        // A shape no other test uses, so the process's cache is this test's.
        let shape = ConvShape { c_in: 7, ..SHAPE };
        let w = values(5 * 7 * 9, 3);
        let key = Key { shape, ..key(&w) };
        let make = || Plan::new(&w, None, &shape);
        let twice = [plan(key, false, make), plan(key, false, make)];
        assert!(!Arc::ptr_eq(&twice[0], &twice[1]));
        assert!(CACHE.lock().unwrap().get(&key).is_none());
        let thrice = [(); 3].map(|_| plan(key, true, make));
        assert!(
            Arc::ptr_eq(&thrice[1], &thrice[2]),
            "frozen: kept from the second use"
        );
    }
}
