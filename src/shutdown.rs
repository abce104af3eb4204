//! Shutdown as a value passed in: what the user (or a caller) asks a running command to do.
//!
//! Each SIGINT/SIGTERM asks for one step more ([`Stop`]): the first a graceful stop (the
//! container gets its grace period, delivery goes on under a deadline), the second a kill (the
//! container ends now, what it wrote is still delivered), the third abandons delivery (what is
//! left is saved and reported). A command reads the [`Shutdown`] it is given and decides what
//! each step means for it; nothing reads process signals or global state.
//!
//! The state is a level in a `watch` channel, so a reader that was busy while two signals
//! arrived sees the newest level and runs every step it missed ([`Stop::steps`]): signals are
//! never coalesced into one step. The first signal is kept for the exit code (130 or 143).
//!
//! Callers that are not driven by signals (the agent's shipping tasks, on-upload's tasks)
//! create their own channel ([`channel`]) or pass [`Shutdown::never`].

use tokio::sync::watch;

use crate::exit_codes;

/// A signal that asks dockwatch to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    /// `128 + signal number`, as shells report it.
    pub fn exit_code(self) -> i32 {
        match self {
            Signal::Interrupt => exit_codes::SIGINT,
            Signal::Terminate => exit_codes::SIGTERM,
        }
    }
}

/// How far stopping has gone; each step includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stop {
    /// Take no new work; let what runs end within its grace period, then deliver the rest.
    Graceful,
    /// End the work now (kill the container); still deliver what it wrote.
    Kill,
    /// Deliver nothing more: save what is left, report it, quit.
    Abandon,
}

impl Stop {
    /// The step after this one.
    fn next(self) -> Stop {
        match self {
            Stop::Graceful => Stop::Kill,
            Stop::Kill | Stop::Abandon => Stop::Abandon,
        }
    }

    /// Every step after `from` up to and including `to`, in order.
    pub(crate) fn steps(from: Option<Stop>, to: Option<Stop>) -> impl Iterator<Item = Stop> {
        [Stop::Graceful, Stop::Kill, Stop::Abandon]
            .into_iter()
            .filter(move |s| Some(*s) > from && Some(*s) <= to)
    }
}

/// The shared state: how far stopping has gone, and the first signal that asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    stop: Option<Stop>,
    signal: Option<Signal>,
}

/// The sending side: signals and callers ask for steps.
#[derive(Debug)]
pub struct Trigger(watch::Sender<State>);

impl Trigger {
    /// A signal arrived: one step more.
    pub fn signal(&self, s: Signal) {
        self.0.send_modify(|st| {
            st.stop = Some(st.stop.map_or(Stop::Graceful, Stop::next));
            st.signal.get_or_insert(s);
        });
    }

    /// Asks for at least `stop` (never less than what was asked before), on behalf of
    /// `signal` when one caused it.
    pub(crate) fn request(&self, stop: Stop, signal: Option<Signal>) {
        self.0.send_if_modified(|st| {
            let before = *st;
            st.stop = st.stop.max(Some(stop));
            if st.signal.is_none() {
                st.signal = signal;
            }
            *st != before
        });
    }
}

/// The receiving side, passed into every command and task.
#[derive(Debug, Clone)]
pub struct Shutdown(Option<watch::Receiver<State>>);

/// A new trigger and the shutdown it drives.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(State::default());
    (Trigger(tx), Shutdown(Some(rx)))
}

impl Shutdown {
    /// A shutdown that is never asked for (work that ends on its own).
    pub(crate) fn never() -> Self {
        Shutdown(None)
    }

    fn state(&self) -> State {
        self.0.as_ref().map(|rx| *rx.borrow()).unwrap_or_default()
    }

    /// How far stopping has gone, if it began.
    pub(crate) fn stop(&self) -> Option<Stop> {
        self.state().stop
    }

    /// True once any stop was asked for.
    pub(crate) fn is_requested(&self) -> bool {
        self.stop().is_some()
    }

    /// The first signal that asked, if a signal did.
    pub(crate) fn signal(&self) -> Option<Signal> {
        self.state().signal
    }

    /// The exit code a command interrupted now reports: its first signal's (130 for a stop
    /// asked without a signal); `None` while nothing asked.
    pub fn exit_code(&self) -> Option<i32> {
        let st = self.state();
        st.stop
            .map(|_| st.signal.map_or(exit_codes::SIGINT, Signal::exit_code))
    }

    /// Waits for the next change and returns the new level. Never returns when nothing can
    /// ask any more (the trigger is gone, or [`Shutdown::never`]).
    pub(crate) async fn changed(&mut self) -> Option<Stop> {
        match self.0.as_mut() {
            Some(rx) => match rx.changed().await {
                Ok(()) => rx.borrow_and_update().stop,
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// Waits until stopping has reached at least `stop` (at once when it has).
    pub(crate) async fn reached(&mut self, stop: Stop) {
        match self.0.as_mut() {
            Some(rx) => {
                if rx.wait_for(|st| st.stop >= Some(stop)).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Waits until any stop is asked for.
    pub(crate) async fn requested(&mut self) {
        self.reached(Stop::Graceful).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signal_is_one_step_and_the_first_names_the_exit_code() {
        let (t, s) = channel();
        assert_eq!(s.stop(), None);
        t.signal(Signal::Terminate);
        assert_eq!(s.stop(), Some(Stop::Graceful));
        t.signal(Signal::Interrupt);
        t.signal(Signal::Interrupt);
        t.signal(Signal::Interrupt);
        assert_eq!(s.stop(), Some(Stop::Abandon));
        assert_eq!(s.signal(), Some(Signal::Terminate));
    }

    #[test]
    fn missed_steps_are_all_run() {
        let all: Vec<_> = Stop::steps(None, Some(Stop::Kill)).collect();
        assert_eq!(all, [Stop::Graceful, Stop::Kill]);
        let rest: Vec<_> = Stop::steps(Some(Stop::Graceful), Some(Stop::Abandon)).collect();
        assert_eq!(rest, [Stop::Kill, Stop::Abandon]);
        assert_eq!(Stop::steps(Some(Stop::Kill), Some(Stop::Kill)).count(), 0);
    }

    #[test]
    fn a_request_never_lowers_the_level() {
        let (t, s) = channel();
        t.request(Stop::Kill, None);
        t.request(Stop::Graceful, Some(Signal::Interrupt));
        assert_eq!(s.stop(), Some(Stop::Kill));
        assert_eq!(s.signal(), Some(Signal::Interrupt));
    }

    #[tokio::test]
    async fn two_quick_signals_are_seen_as_a_kill() {
        let (t, mut s) = channel();
        let mut seen = None;
        t.signal(Signal::Interrupt);
        t.signal(Signal::Interrupt);
        let now = s.changed().await;
        let steps: Vec<_> = Stop::steps(seen, now).collect();
        seen = now;
        assert_eq!(steps, [Stop::Graceful, Stop::Kill]);
        assert_eq!(seen, Some(Stop::Kill));
    }

    #[tokio::test]
    async fn never_is_never_requested() {
        let mut s = Shutdown::never();
        assert!(!s.is_requested());
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), s.requested());
        assert!(waited.await.is_err());
    }
}
