//! What the training loop reports, and to whom: the loop calls an [`Observer`] and knows
//! nothing of terminals (the binary's observer draws the progress bar).

use std::path::Path;

use super::step::LossValues;

/// The training phase (Section IV-C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Content-only pre-training of G.
    Pretrain,
    /// Alternating D and G steps.
    Adversarial,
}

impl Phase {
    /// Name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Pretrain => "pretrain",
            Phase::Adversarial => "adversarial",
        }
    }
}

/// The plan of a run, reported once at the start.
#[derive(Clone, Debug)]
pub struct Plan<'a> {
    /// The run folder.
    pub run_dir: &'a Path,
    /// First step (non-zero when resuming).
    pub start_step: usize,
    /// Last step + 1.
    pub end_step: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Photos and cartoons found.
    pub images: (usize, usize),
}

/// One finished step.
#[derive(Clone, Debug)]
pub struct StepReport<'a> {
    /// Steps done after this one (1-based count).
    pub step: usize,
    /// Epoch of this step (0-based).
    pub epoch: usize,
    /// Phase.
    pub phase: Phase,
    /// Loss values.
    pub losses: &'a LossValues,
    /// Images per second (photos, both steps together).
    pub images_per_s: f32,
}

/// Receives the loop's events. Every method has an empty default.
pub trait Observer {
    /// Training starts.
    fn started(&mut self, _plan: &Plan<'_>) {}
    /// A step finished.
    fn step(&mut self, _report: &StepReport<'_>) {}
    /// An unreadable file was skipped.
    fn skipped(&mut self, _path: &Path, _reason: &str) {}
    /// A checkpoint was written.
    fn checkpoint(&mut self, _path: &Path) {}
    /// A sample grid was written.
    fn sample(&mut self, _path: &Path) {}
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {}
