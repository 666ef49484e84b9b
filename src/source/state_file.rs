//! Durable stream positions, so a restart continues the sequences instead of starting over.
//!
//! The file holds, per parity, the highest integer the server may have sent: a reservation
//! made *before* sending, like a database sequence's cache. The ticker reserves a block of
//! integers ahead, so the file is written about once per block, not once per tick. After a
//! crash the streams continue after the reservation (skipping at most one block's unsent
//! integers, never repeating one); a graceful shutdown writes the exact last integers, so the
//! next start continues exactly.
//!
//! Every write goes to a temporary file that is fsynced and renamed over the old one, and the
//! directory is fsynced, so the file is always either the old or the new version.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stream::parity::{ByParity, Parity};

const FORMAT_VERSION: u32 = 1;

/// Why the state file could not be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "state file {path} is not valid: {detail}; fix or remove it \
         (removing restarts the streams at 1 and 2)"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot write state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The file's content: the highest integer of each stream that may have been sent.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    odd: u64,
    even: u64,
}

/// A state file at a fixed path.
#[derive(Debug, Clone)]
pub(crate) struct CounterStore {
    path: PathBuf,
}

impl CounterStore {
    /// Opens the store at `path` and returns the positions to continue from (none produced when the
    /// file does not exist yet). It writes them back at once, so a path that cannot be written
    /// fails at start-up rather than at the first tick.
    pub(crate) fn open(path: &Path) -> Result<(CounterStore, ByParity<u64>), StoreError> {
        let store = CounterStore {
            path: path.to_owned(),
        };
        let positions = match fs::read(path) {
            Ok(bytes) => store.parse(&bytes)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => ByParity::default(),
            Err(source) => {
                return Err(StoreError::Read {
                    path: store.path,
                    source,
                });
            }
        };
        store.save(positions)?;
        Ok((store, positions))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Records that no integer beyond `positions` (per parity) has been or will be sent
    /// without another save.
    pub(crate) fn save(&self, positions: ByParity<u64>) -> Result<(), StoreError> {
        let integer = |parity: Parity| parity.integer_at(positions[parity]).unwrap_or(0);
        let state = StateFile {
            version: FORMAT_VERSION,
            odd: integer(Parity::Odd),
            even: integer(Parity::Even),
        };
        let mut json = serde_json::to_vec_pretty(&state).expect("plain struct serialises");
        json.push(b'\n');
        self.replace_atomically(&json)
            .map_err(|source| StoreError::Write {
                path: self.path.clone(),
                source,
            })
    }

    fn parse(&self, bytes: &[u8]) -> Result<ByParity<u64>, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let state: StateFile =
            serde_json::from_slice(bytes).map_err(|error| corrupt(error.to_string()))?;
        if state.version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {} is not the supported {FORMAT_VERSION}",
                state.version
            )));
        }
        let position = |parity: Parity, integer: u64| {
            if integer == 0 {
                return Ok(0);
            }
            parity
                .position_of(integer)
                .filter(|&position| parity.integer_at(position + 1).is_some())
                .ok_or_else(|| corrupt(format!("{integer} is not a usable {parity} integer")))
        };
        Ok(ByParity {
            odd: position(Parity::Odd, state.odd)?,
            even: position(Parity::Even, state.even)?,
        })
    }

    fn replace_atomically(&self, contents: &[u8]) -> io::Result<()> {
        let directory = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let mut temporary_name = self.path.file_name().unwrap_or_default().to_owned();
        temporary_name.push(".tmp");
        let temporary = directory.join(temporary_name);
        let mut file = File::create(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, &self.path)?;
        // The rename is durable only once the directory entry is.
        File::open(directory)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("integers-store-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir.join("state.json")
    }

    // Promise: state-file-remove
    #[test]
    fn a_missing_file_starts_at_zero_and_is_created() {
        let path = temp_path("missing");
        let (_, positions) = CounterStore::open(&path).unwrap();
        assert_eq!(positions, ByParity::default());
        assert!(path.exists());
    }

    #[test]
    fn saved_positions_come_back() {
        let path = temp_path("roundtrip");
        let (store, _) = CounterStore::open(&path).unwrap();
        store.save(ByParity { odd: 5, even: 7 }).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"odd\": 9") && text.contains("\"even\": 14"),
            "{text}"
        );
        assert_eq!(
            CounterStore::open(&path).unwrap().1,
            ByParity { odd: 5, even: 7 }
        );
    }

    // Promise: state-file-bad-stops
    #[test]
    fn a_corrupt_file_is_an_error_naming_the_file() {
        let path = temp_path("corrupt");
        for content in [
            "{not json",
            r#"{"version":1,"odd":4,"even":2}"#,
            r#"{"version":2,"odd":1,"even":2}"#,
            r#"{"version":1,"odd":1}"#,
            "",
        ] {
            fs::write(&path, content).unwrap();
            let error = CounterStore::open(&path).unwrap_err();
            assert!(
                matches!(error, StoreError::Corrupt { .. }),
                "{content}: {error}"
            );
            assert!(error.to_string().contains(&path.display().to_string()));
        }
    }

    // Promise: state-file-bad-stops
    #[test]
    fn a_position_with_no_next_integer_is_refused() {
        // The last odd integer a u64 holds is usable only if the one after it is too.
        let path = temp_path("last");
        for last in [u64::MAX, u64::MAX - 2] {
            fs::write(&path, format!(r#"{{"version":1,"odd":{last},"even":2}}"#)).unwrap();
            let error = CounterStore::open(&path).unwrap_err();
            assert!(
                error.to_string().contains("is not a usable odd integer"),
                "{last}: {error}"
            );
        }
        let below = u64::MAX - 4;
        fs::write(&path, format!(r#"{{"version":1,"odd":{below},"even":2}}"#)).unwrap();
        let (_, positions) = CounterStore::open(&path).unwrap();
        let odd = Parity::Odd.position_of(below).unwrap();
        assert_eq!(positions, ByParity { odd, even: 1 });
    }

    #[test]
    fn an_unwritable_path_fails_at_open() {
        let path = temp_path("unwritable")
            .join("missing-dir")
            .join("state.json");
        let error = CounterStore::open(&path).unwrap_err();
        assert!(matches!(error, StoreError::Write { .. }), "{error}");
    }
}
