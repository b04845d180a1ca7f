//! The inputs and outputs side of a reload: what is built and attached
//! before the swap (so a port that cannot be bound fails the reload with
//! nothing changed), undone if the reload does not happen, and what is
//! stopped, closed and started after it. The decisions come from
//! [`super::plan`]; this file carries them out.

use std::sync::Arc;
use std::time::Duration;

use super::plan::{Step, plan};
use super::{CONNECT_GRACE, Live, REBIND_LINGER, RETIRE_LINGER, ReloadError, Reloader};
use crate::app::io::{RunningInput, RunningOutput};
use crate::config::{self, Config};
use crate::ingress;

/// Inputs and outputs made ready for a reload before its swap.
#[derive(Default)]
pub(super) struct IoChange {
    /// The output set to be in force, in config order.
    pub(super) outputs: Vec<RunningOutput>,
    /// Outputs built and bound for this reload (closed again by an undo).
    created: Vec<RunningOutput>,
    /// Outputs (by position in `outputs`) that attach once the leaving
    /// ones they wait for have closed.
    deferred: Vec<usize>,
    /// Leaving outputs a successor waits for: closed right after the swap.
    closing_first: Vec<RunningOutput>,
    /// Leaving outputs nobody waits for: closed in the background.
    retiring: Vec<RunningOutput>,
    /// Inputs started for this reload (stopped again by an undo).
    started: Vec<RunningInput>,
    /// Old inputs that stop after the swap: removed or replaced.
    pub(super) leaving_inputs: Vec<String>,
    /// New or changed inputs that need what a leaving input holds:
    /// started once the leaving inputs stopped.
    restart: Vec<config::Input>,
}

impl IoChange {
    /// Gives back what was built for a reload that does not happen.
    pub(super) async fn undo(self) {
        for output in self.created {
            output.handle.flush_and_close(Duration::ZERO).await;
        }
        for input in self.started {
            input.stop().await;
        }
    }
}

impl Reloader {
    /// The context new inputs start with under `config`.
    pub(super) fn inputs_context(&self, config: &Config) -> ingress::Context {
        ingress::Context {
            block_timeout: crate::app::block_timeout(config),
            shutdown_grace: config.router.shutdown_grace,
            ..self.inputs_context.clone()
        }
    }

    /// Builds and binds what the new config adds or moves, before the
    /// swap; on any failure gives it all back.
    pub(super) async fn prepare_io(
        &self,
        live: &Live,
        config: &Config,
        prefixes: &[String],
    ) -> Result<IoChange, ReloadError> {
        let mut io = IoChange::default();
        match self.prepare_io_steps(live, config, prefixes, &mut io).await {
            Ok(()) => Ok(io),
            Err(e) => {
                io.undo().await;
                Err(ReloadError::Conflict(format!(
                    "{}: {e}",
                    self.path.display()
                )))
            }
        }
    }

    async fn prepare_io_steps(
        &self,
        live: &Live,
        config: &Config,
        prefixes: &[String],
        io: &mut IoChange,
    ) -> Result<(), crate::app::Error> {
        let old = self.outputs.load_full();
        let running: Vec<config::Output> = old.iter().map(|o| o.config.clone()).collect();
        let outputs = plan(&running, &config.outputs);
        for (entry, step) in config.outputs.iter().zip(outputs.steps) {
            match step {
                Step::Keep(i) => io.outputs.push(old[i].clone()),
                Step::StartAfterLeaving => {
                    io.deferred.push(io.outputs.len());
                    io.outputs
                        .push(RunningOutput::create(entry, &self.families.outputs));
                }
                Step::Start => {
                    let mut new = RunningOutput::create(entry, &self.families.outputs);
                    io.created.push(new.clone());
                    new.attach().await?;
                    io.created.last_mut().expect("just pushed").addr = new.addr;
                    new.wait_connected(CONNECT_GRACE).await;
                    io.outputs.push(new);
                }
            }
        }
        for leaving in outputs.leaving {
            let output = old[leaving.old].clone();
            if leaving.first {
                io.closing_first.push(output);
            } else {
                io.retiring.push(output);
            }
        }
        let context = self.inputs_context(config);
        let running: Vec<config::Input> = live.inputs.iter().map(|i| i.config.clone()).collect();
        let inputs = plan(&running, &config.inputs);
        for (entry, step) in config.inputs.iter().zip(inputs.steps) {
            match step {
                Step::Keep(_) => {}
                Step::StartAfterLeaving => io.restart.push(entry.clone()),
                Step::Start => io
                    .started
                    .push(RunningInput::start(entry, prefixes, &context).await?),
            }
        }
        io.leaving_inputs.extend(
            inputs
                .leaving
                .iter()
                .map(|l| live.inputs[l.old].config.name.clone()),
        );
        Ok(())
    }

    /// After the swap: stops the inputs that leave and starts their
    /// successors on the same address, closes the outputs that leave and
    /// binds their successors, and puts the new sets in force. What could
    /// not be bound again is returned as warnings.
    pub(super) async fn finish_io(
        &self,
        live: &mut Live,
        io: IoChange,
        config: &Config,
        prefixes: &[String],
    ) -> Vec<String> {
        let mut warnings = Vec::new();
        let (leaving, staying): (Vec<RunningInput>, Vec<RunningInput>) = live
            .inputs
            .drain(..)
            .partition(|i| io.leaving_inputs.contains(&i.config.name));
        for input in leaving {
            input.stop().await;
        }
        let mut inputs = staying;
        inputs.extend(io.started);
        let context = self.inputs_context(config);
        for entry in &io.restart {
            match RunningInput::start(entry, prefixes, &context).await {
                Ok(input) => inputs.push(input),
                Err(e) => warnings.push(format!(
                    "input {:?} could not start after the input holding its address stopped: {e}",
                    entry.name
                )),
            }
        }
        inputs.sort_by_key(|i| {
            config
                .inputs
                .iter()
                .position(|e| e.name == i.config.name)
                .unwrap_or(usize::MAX)
        });
        live.inputs = inputs;

        let mut outputs = io.outputs;
        for old in io.closing_first {
            old.handle.flush_and_close(REBIND_LINGER).await;
        }
        for at in io.deferred {
            if let Err(e) = outputs[at].attach().await {
                warnings.push(format!(
                    "output {:?} could not bind after the output holding its address closed: {e}",
                    outputs[at].config.name
                ));
            }
        }
        for old in io.retiring {
            self.closing.spawn(async move {
                old.handle.flush_and_close(RETIRE_LINGER).await;
            });
        }
        self.outputs.store(Arc::new(outputs));
        for w in &warnings {
            tracing::error!("{w}");
        }
        warnings
    }
}
