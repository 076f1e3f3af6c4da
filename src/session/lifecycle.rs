//! Where a session is in its life, as a pure state machine: no I/O, no clock of its own (the
//! caller passes the session clock in ms), so unit tests drive it directly.
//!
//! ```text
//!            ESME unbind ──► EsmeUnbinding ──(SMSC's unbind_resp)──► Done
//!  Bound ──► SMSC unbind ──► SmscUnbinding ──(ESME's unbind_resp)──► Done
//!    │  └──► shutdown ─────► Draining ──(nothing in flight | grace over)──► Closing ─► Done
//!    └─────► a leg lost / crossing unbinds ─────────────────────────────► Closing ─► Done
//! ```
//!
//! `Closing` means consentgate sent its own unbind on every leg still open and not yet
//! unbound, and waits for the answers until a deadline.

/// The state of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Bound,
    /// The ESME sent unbind; it was relayed to the SMSC.
    EsmeUnbinding,
    /// The SMSC sent unbind; it was relayed to the ESME.
    SmscUnbinding,
    /// Shutdown: no new requests, waiting for in-flight ones until the deadline.
    Draining {
        deadline_ms: u64,
    },
    /// consentgate sent its own unbind(s); waiting for the answers until the deadline.
    Closing {
        deadline_ms: u64,
    },
    Done,
}

/// What [`Lifecycle::progress`] asks the session to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The drain is over (nothing in flight, grace expired or the SMSC gone): answer what is
    /// still pending upstream, then start closing with reason "shutdown".
    EndDrain,
    /// Closing is over (both legs unbound or gone, or the deadline passed): finish.
    Finish,
}

/// The session's lifecycle: its state, which legs are unbound, and why it closes.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    state: State,
    /// The ESME leg is unbound (its unbind answered, or it answered ours).
    pub esme_unbound: bool,
    /// The SMSC leg is unbound.
    pub smsc_unbound: bool,
    close_reason: &'static str,
    /// Why the session drains (`begin_drain`): the close reason once the drain ends.
    drain_reason: &'static str,
}

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        Lifecycle {
            state: State::Bound,
            esme_unbound: false,
            smsc_unbound: false,
            close_reason: "",
            drain_reason: "shutdown",
        }
    }
}

impl Lifecycle {
    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn close_reason(&self) -> &'static str {
        self.close_reason
    }

    /// Why the session drains (see [`Lifecycle::begin_drain`]).
    pub fn drain_reason(&self) -> &'static str {
        self.drain_reason
    }

    /// Whether the session takes new requests and routes MOs (bound, or draining for MOs).
    pub fn is_bound(&self) -> bool {
        self.state == State::Bound
    }

    /// Bound or draining: in-flight work is still relayed both ways.
    pub fn is_serving(&self) -> bool {
        matches!(self.state, State::Bound | State::Draining { .. })
    }

    /// The ESME's unbind was relayed upstream.
    pub fn esme_unbinding(&mut self) {
        if self.state == State::Bound {
            self.state = State::EsmeUnbinding;
        }
    }

    /// The SMSC's unbind was relayed to the ESME.
    pub fn smsc_unbinding(&mut self) {
        if self.state == State::Bound {
            self.state = State::SmscUnbinding;
        }
    }

    /// Shutdown (or a drain, or the account gone: `why`): from `Bound`, stop taking new
    /// requests until `deadline_ms`.
    pub fn begin_drain(&mut self, deadline_ms: u64, why: &'static str) -> bool {
        if self.state == State::Bound {
            self.drain_reason = why;
            self.state = State::Draining { deadline_ms };
            return true;
        }
        false
    }

    /// Decides what happens next after an event, given the session's facts now.
    pub fn progress(&self, now_ms: u64, in_flight_up: usize, up_open: bool, down_open: bool) -> Option<Step> {
        match self.state {
            State::Draining { deadline_ms } if in_flight_up == 0 || now_ms >= deadline_ms || !up_open => {
                Some(Step::EndDrain)
            }
            State::Closing { deadline_ms }
                if ((self.esme_unbound || !down_open) && (self.smsc_unbound || !up_open)) || now_ms >= deadline_ms =>
            {
                Some(Step::Finish)
            }
            _ => None,
        }
    }

    /// Enters `Closing` until `deadline_ms` (the caller then sends its own unbinds). `false`
    /// when already closing or done.
    pub fn start_closing(&mut self, reason: &'static str, deadline_ms: u64) -> bool {
        if matches!(self.state, State::Closing { .. } | State::Done) {
            return false;
        }
        self.close_reason = reason;
        self.state = State::Closing { deadline_ms };
        true
    }

    /// A leg is gone: whatever the state, the session (re)starts closing with this reason and
    /// a fresh deadline, and the caller sends its own unbind again on a leg still open (losing
    /// a leg drops what was pending on the other one, consentgate's earlier unbind included,
    /// so its answer could not be matched any more). `false` when already done.
    pub fn leg_lost(&mut self, reason: &'static str, deadline_ms: u64) -> bool {
        if self.state == State::Done {
            return false;
        }
        self.close_reason = reason;
        self.state = State::Closing { deadline_ms };
        true
    }

    /// The end. `false` when already done. The first reason given is kept.
    pub fn finish(&mut self, reason: &'static str) -> bool {
        if self.state == State::Done {
            return false;
        }
        if self.close_reason.is_empty() {
            self.close_reason = reason;
        }
        self.state = State::Done;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_ends_when_nothing_is_in_flight_or_the_grace_is_over() {
        let mut l = Lifecycle::default();
        assert!(l.begin_drain(1_000, "shutdown"));
        assert!(!l.begin_drain(5_000, "shutdown"), "draining twice keeps the first deadline");
        assert_eq!(l.progress(10, 3, true, true), None);
        assert_eq!(l.progress(10, 0, true, true), Some(Step::EndDrain));
        assert_eq!(l.progress(1_000, 3, true, true), Some(Step::EndDrain));
        assert_eq!(l.progress(10, 3, false, true), Some(Step::EndDrain), "SMSC gone: nothing to wait for");
    }

    #[test]
    fn closing_waits_for_both_unbinds_or_the_deadline() {
        let mut l = Lifecycle::default();
        assert!(l.start_closing("shutdown", 2_000));
        assert!(!l.start_closing("again", 9_000));
        assert_eq!(l.progress(100, 0, true, true), None);
        l.esme_unbound = true;
        assert_eq!(l.progress(100, 0, true, true), None);
        l.smsc_unbound = true;
        assert_eq!(l.progress(100, 0, true, true), Some(Step::Finish));
        let mut l = Lifecycle::default();
        l.start_closing("x", 2_000);
        assert_eq!(l.progress(100, 0, false, false), Some(Step::Finish), "both legs gone");
        let mut l = Lifecycle::default();
        l.start_closing("x", 2_000);
        assert_eq!(l.progress(2_000, 0, true, true), Some(Step::Finish));
        assert!(l.finish("deadline"));
        assert_eq!(l.close_reason(), "x");
        assert!(!l.finish("twice"));
    }

    #[test]
    fn a_lost_leg_closes_from_any_state_but_done() {
        for start in ["bound", "esme-unbinding", "smsc-unbinding", "draining"] {
            let mut l = Lifecycle::default();
            match start {
                "esme-unbinding" => l.esme_unbinding(),
                "smsc-unbinding" => l.smsc_unbinding(),
                "draining" => {
                    l.begin_drain(1_000, "shutdown");
                }
                _ => {}
            }
            assert!(l.leg_lost("esme closed the connection", 500), "{start}");
            assert_eq!(l.state(), State::Closing { deadline_ms: 500 }, "{start}");
        }
        // Already closing (e.g. unbinding at shutdown): closing starts again with the new
        // reason and deadline, so the unbind to the other leg is re-sent and can be answered.
        let mut l = Lifecycle::default();
        l.start_closing("shutdown", 100);
        assert!(l.leg_lost("smsc closed the connection", 900));
        assert_eq!((l.state(), l.close_reason()), (State::Closing { deadline_ms: 900 }, "smsc closed the connection"));
        let mut l = Lifecycle::default();
        l.finish("done");
        assert!(!l.leg_lost("late", 1));
        assert!(l.is_done());
    }

    #[test]
    fn unbinding_states_are_entered_only_from_bound() {
        let mut l = Lifecycle::default();
        l.begin_drain(1, "shutdown");
        l.esme_unbinding();
        assert!(matches!(l.state(), State::Draining { .. }));
        let mut l = Lifecycle::default();
        l.smsc_unbinding();
        assert_eq!(l.state(), State::SmscUnbinding);
        assert!(!l.is_bound() && !l.is_serving());
    }
}
