//! The resume guarantee: once stopped, every exit path of [`Session::run_stopped`] sends
//! Continue2 (success, error, `--timeout`, panic, SIGINT, SIGTERM) unless `stay_broken` is set.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use tracing::{error, warn};

use super::{Error, Result, Session};

/// Polls a future, turning a panic inside it into `Err(payload)`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::result::Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Completes with the signal's name on SIGINT or SIGTERM.
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        tokio::select! {
            Some(()) = async { match term.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => "SIGTERM",
            Some(()) = async { match int.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

enum Outcome<T> {
    Done(Result<T>),
    Panicked(Box<dyn Any + Send>),
    Signal(&'static str),
    TimedOut(std::time::Duration),
}

impl Session {
    /// Runs `work` while the target is stopped, then resumes it, whatever happened: `work`
    /// succeeding, failing, panicking, overrunning `overall_timeout`, or SIGINT/SIGTERM (when
    /// `handle_signals`). Only `stay_broken` leaves the target stopped. A panic is re-raised
    /// after the resume; a signal becomes [`Error::Interrupted`].
    pub async fn run_stopped<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut Session) -> Result<T>,
    ) -> Result<T> {
        let handle_signals = self.options.handle_signals;
        let overall = self.options.overall_timeout;
        let outcome = {
            let job = CatchUnwind(Box::pin(work(self)));
            let signal = async {
                if handle_signals {
                    shutdown_signal().await
                } else {
                    std::future::pending().await
                }
            };
            let timer = async {
                match overall {
                    Some(limit) => {
                        tokio::time::sleep(limit).await;
                        limit
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                name = signal => Outcome::Signal(name),
                limit = timer => Outcome::TimedOut(limit),
                result = job => match result {
                    Ok(result) => Outcome::Done(result),
                    Err(payload) => Outcome::Panicked(payload),
                },
            }
        };
        let result = match outcome {
            Outcome::Done(result) => result,
            Outcome::Signal(name) => {
                warn!(
                    signal = name,
                    "interrupted; resuming the target before exiting"
                );
                Err(Error::Interrupted(name))
            }
            Outcome::TimedOut(limit) => Err(Error::OverallTimeout(limit)),
            Outcome::Panicked(payload) => {
                error!("panic while the target was stopped; resuming it first");
                if let Err(resume) = self.finish().await {
                    error!(%resume, "resume after panic failed");
                }
                resume_unwind(payload);
            }
        };
        match (result, self.finish().await) {
            (result, Ok(())) => result,
            (Ok(_), Err(resume)) => Err(resume),
            (Err(error), Err(resume)) => Err(Error::ResumeFailed {
                error: Box::new(error),
                resume: Box::new(resume),
            }),
        }
    }

    /// Resumes unless told to stay broken.
    async fn finish(&mut self) -> Result<()> {
        if self.options.stay_broken {
            if self.is_stopped() {
                warn!("--stay-broken: leaving the target stopped");
            }
            return Ok(());
        }
        self.resume().await
    }
}

/// SIGINT/SIGTERM for a whole command (a watch, a pull of several stops): one listener from the
/// start, so a signal that arrives between two awaits (while a record is written, say) is not
/// lost. Disabled, it never fires.
pub struct Interrupt {
    fired: tokio::sync::watch::Receiver<Option<&'static str>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Interrupt {
    pub fn new(enabled: bool) -> Self {
        let (tx, fired) = tokio::sync::watch::channel(None);
        let task = enabled.then(|| {
            tokio::spawn(async move {
                let name = shutdown_signal().await;
                let _ = tx.send(Some(name));
                // Keep the sender (and so the receivers' state) alive.
                std::future::pending::<()>().await;
            })
        });
        Self { fired, task }
    }

    /// The signal's name, once one arrived.
    pub fn fired(&self) -> Option<&'static str> {
        *self.fired.borrow()
    }

    /// Completes with the signal's name when one arrives (at once if one has).
    pub async fn wait(&self) -> &'static str {
        let mut rx = self.fired.clone();
        let name = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|name| *name);
        match name {
            Some(name) => name,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
