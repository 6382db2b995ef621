//! Turn-taking for writers of one SQLite file in this process. SQLite admits one writer per file; a writer
//! that finds the lock taken sleeps in SQLite's busy handler (1, 2, 5, 10 … 100 ms) and retries, so under a
//! steady stream of journal commits a read side's offset write could lose the race for seconds. Writers
//! queue here instead (first come, first served) and find the lock free when their turn comes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::{Mutex as TurnLock, MutexGuard};

/// One queue of writers per database file, shared by every handle this process opened on it.
#[derive(Clone)]
pub(crate) struct WriteGate {
    turn: Arc<TurnLock<()>>,
}

/// The gates of the files open in this process; an entry lives as long as a handle holds its gate.
fn gates() -> &'static Mutex<HashMap<PathBuf, Weak<TurnLock<()>>>> {
    static GATES: OnceLock<Mutex<HashMap<PathBuf, Weak<TurnLock<()>>>>> = OnceLock::new();
    GATES.get_or_init(|| Mutex::new(HashMap::new()))
}

impl WriteGate {
    /// The gate of `file` (which must exist, so that two spellings of one path share it).
    pub(crate) fn for_file(file: &Path) -> Self {
        let key = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        // A poisoned registry only means another thread panicked while holding it; the map itself is intact.
        let mut gates = gates()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gates.retain(|_, gate| gate.strong_count() > 0);
        if let Some(turn) = gates.get(&key).and_then(Weak::upgrade) {
            return Self { turn };
        }
        let turn = Arc::new(TurnLock::new(()));
        gates.insert(key, Arc::downgrade(&turn));
        Self { turn }
    }

    /// Waits for this writer's turn; the turn ends when the guard is dropped (after the commit).
    pub(crate) async fn turn(&self) -> MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    #[cfg(test)]
    fn same_as(&self, other: &WriteGate) -> bool {
        Arc::ptr_eq(&self.turn, &other.turn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_on_one_file_share_a_gate_and_other_files_do_not() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let first = directory.path().join("a.db");
        let second = directory.path().join("b.db");
        std::fs::write(&first, b"").expect("file");
        std::fs::write(&second, b"").expect("file");
        let gate = WriteGate::for_file(&first);
        let same_file_other_spelling = directory.path().join(".").join("a.db");
        assert!(gate.same_as(&WriteGate::for_file(&same_file_other_spelling)));
        assert!(!gate.same_as(&WriteGate::for_file(&second)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn writers_take_turns_in_arrival_order() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let file = directory.path().join("c.db");
        std::fs::write(&file, b"").expect("file");
        let gate = WriteGate::for_file(&file);
        let first_turn = gate.turn().await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for writer in 0..3 {
            let gate = WriteGate::for_file(&file);
            let order = order.clone();
            waiting.push(tokio::spawn(async move {
                let _turn = gate.turn().await;
                order.lock().expect("order").push(writer);
            }));
            // On this single-threaded runtime a yield runs the new writer until it waits in the queue, so
            // writers join in spawn order without any sleep.
            tokio::task::yield_now().await;
        }
        assert!(
            order.lock().expect("order").is_empty(),
            "nobody writes while the turn is held"
        );
        drop(first_turn);
        for writer in waiting {
            writer.await.expect("writer");
        }
        assert_eq!(*order.lock().expect("order"), vec![0, 1, 2]);
    }
}
