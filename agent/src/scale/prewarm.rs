//! Accounting of workers started for motion candidates: a candidate that finds no
//! worker running starts one; if its motion stops before the event is confirmed, that
//! start was a false start (the worker then idles through `cooldown_period`). Plain
//! data, so the counts are testable without processes.

use std::collections::HashSet;

#[derive(Debug, Default)]
pub struct CandidateStarts {
    /// Cameras whose open candidate started a worker.
    started: HashSet<String>,
}

impl CandidateStarts {
    /// A camera's candidate appeared while `running` workers run: true when it starts
    /// one (the caller counts it).
    pub fn seen(&mut self, camera: &str, running: u32) -> bool {
        if running > 0 {
            return false;
        }
        self.started.insert(camera.to_string())
    }

    /// The camera's candidate became an event: its start was worth it.
    pub fn confirmed(&mut self, camera: &str) {
        self.started.remove(camera);
    }

    /// The camera's candidate went without an event: true when it had started a worker.
    pub fn dropped(&mut self, camera: &str) -> bool {
        self.started.remove(camera)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_candidates_that_started_a_worker_and_dropped_are_false_starts() {
        let mut s = CandidateStarts::default();
        assert!(s.seen("gate", 0), "no worker: this candidate starts one");
        assert!(s.dropped("gate"), "and it never became an event");
        assert!(!s.dropped("gate"), "counted once");

        assert!(s.seen("gate", 0));
        s.confirmed("gate");
        assert!(!s.dropped("gate"), "confirmed: not a false start");

        assert!(!s.seen("yard", 1), "a worker already runs: nothing started");
        assert!(!s.dropped("yard"));

        assert!(s.seen("gate", 0));
        assert!(!s.seen("gate", 0), "one start per open candidate");
        assert!(!s.dropped("yard"), "cameras are apart");
        assert!(s.dropped("gate"));
    }
}
