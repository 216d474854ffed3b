//! Pinning: write a source's sha256 into the recipe (or overlay) file that declares it,
//! keeping the file's formatting and comments (`forge prefetch`, docs/sources.md).
//!
//! Edits go through `toml_edit`, which round-trips everything it does not touch. A source
//! entry is found by what identifies it in its file: the package (for overlays, the
//! `[[override]]` naming it), the `url` and the file name it gets in `$FORGE_SOURCES`. The
//! checksum key it had (`md5`, `sha256` or `blake3`) is replaced in place by `sha256`.
//!
//! The loader refuses a url source without a checksum, so listing those
//! ([`unpinned_url_sources`]) reads the file leniently, with `toml_edit` alone.

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, InlineTable, Item, Key, Table, Value};

use super::parse::url_filename;
use crate::hash::Checksum;

const CHECKSUM_KEYS: [&str; 3] = ["sha256", "md5", "blake3"];

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{}: cannot edit: {message}", path.display())]
    Toml { path: PathBuf, message: String },
    #[error("{}: no source of package {package:?} with url {url:?} and file name {filename:?}", path.display())]
    NotFound { path: PathBuf, package: String, url: String, filename: String },
    #[error("pin_sha256 needs a sha256 checksum, got {got}")]
    NotSha256 { got: Checksum },
}

/// Which source entry to pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinTarget {
    /// The recipe or overlay file that declares the source (`Source::at.file`).
    pub file: PathBuf,
    pub package: String,
    pub url: String,
    /// The name it gets in `$FORGE_SOURCES` (`Source::filename`).
    pub filename: String,
}

/// A `url` source written without any checksum key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpinnedSource {
    pub target: PinTarget,
    pub mirrors: Vec<String>,
}

/// Replace the checksum of `target` by `sha256` (or add it), keeping the key's position and
/// leading comments. `note` becomes a trailing comment where TOML allows one (not in inline
/// tables), e.g. to record the published md5 the download was verified against.
pub fn pin_sha256(target: &PinTarget, sha256: &Checksum, note: Option<&str>) -> Result<(), PinError> {
    if !matches!(sha256, Checksum::Sha256(_)) {
        return Err(PinError::NotSha256 { got: sha256.clone() });
    }
    let mut doc = read_document(&target.file)?;
    let mut entries = source_entries(&mut doc);
    let entry = entries.iter_mut().find(|e| e.matches(target)).ok_or_else(|| PinError::NotFound {
        path: target.file.clone(),
        package: target.package.clone(),
        url: target.url.clone(),
        filename: target.filename.clone(),
    })?;
    entry.entry.set_sha256(&sha256.hex(), note);
    write_atomically(&target.file, &doc.to_string())
}

/// A `deb` source to move to another version: `deb = "PACKAGE=FROM"` of `recipe` in `file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebRepin {
    pub file: PathBuf,
    /// The recipe (or overlay override) the source belongs to.
    pub recipe: String,
    pub package: String,
    pub from: String,
    pub to: String,
    /// The new `.deb`'s sha256, from the signed index.
    pub sha256: Checksum,
    /// The new file name in `$FORGE_SOURCES`, written as `name` when the entry has one or the
    /// package is not `amd64` (forge's default name says `amd64`).
    pub name: Option<String>,
}

/// Rewrite one `deb` source in place: its `deb` value, its checksum (as `sha256`) and, when
/// needed, its `name`; everything else in the file stays byte for byte.
pub fn repin_deb(repin: &DebRepin) -> Result<(), PinError> {
    if !matches!(repin.sha256, Checksum::Sha256(_)) {
        return Err(PinError::NotSha256 { got: repin.sha256.clone() });
    }
    let mut doc = read_document(&repin.file)?;
    let old = format!("{}={}", repin.package, repin.from);
    let mut entries = source_entries(&mut doc);
    let entry = entries
        .iter_mut()
        .find(|e| e.package == repin.recipe && e.entry.get_str("deb").as_deref() == Some(old.as_str()))
        .ok_or_else(|| PinError::NotFound { path: repin.file.clone(), package: repin.recipe.clone(), url: format!("deb {old}"), filename: String::new() })?;
    entry.entry.set_str("deb", &format!("{}={}", repin.package, repin.to));
    if let Some(name) = &repin.name {
        entry.entry.set_str("name", name);
    }
    entry.entry.set_sha256(&repin.sha256.hex(), None);
    write_atomically(&repin.file, &doc.to_string())
}

/// Every `url` source without a checksum in the recipe or overlay `file`, read leniently (no
/// other validation), optionally only those of `packages`.
pub fn unpinned_url_sources(file: &Path, packages: &[String]) -> Result<Vec<UnpinnedSource>, PinError> {
    let mut doc = read_document(file)?;
    let found = source_entries(&mut doc)
        .into_iter()
        .filter(|e| packages.is_empty() || packages.contains(&e.package))
        .filter(|e| !CHECKSUM_KEYS.iter().any(|k| e.entry.get_str(k).is_some()))
        .filter_map(|e| {
            let url = e.entry.get_str("url")?;
            let filename = e.entry.get_str("name").or_else(|| url_filename(&url))?;
            let mirrors = e.entry.get_strings("mirrors");
            let target = PinTarget { file: file.to_path_buf(), package: e.package, url, filename };
            Some(UnpinnedSource { target, mirrors })
        })
        .collect();
    Ok(found)
}

fn read_document(file: &Path) -> Result<DocumentMut, PinError> {
    let text = super::read_text(file).map_err(|source| PinError::Io { op: "read", path: file.to_path_buf(), source })?;
    text.parse::<DocumentMut>()
        .map_err(|e| PinError::Toml { path: file.to_path_buf(), message: e.to_string().trim_end().to_string() })
}

/// Write beside the file and rename over it: a crash leaves the old or the new file, whole.
fn write_atomically(file: &Path, text: &str) -> Result<(), PinError> {
    let tmp = file.with_file_name(format!(
        ".{}.forge-pin-{}",
        file.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    fs::write(&tmp, text).map_err(|source| PinError::Io { op: "write", path: tmp.clone(), source })?;
    if let Ok(meta) = fs::metadata(file) {
        // Keep the recipe's permissions; failing to is not worth losing the pin over.
        let _ = fs::set_permissions(&tmp, meta.permissions());
    }
    fs::rename(&tmp, file).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        PinError::Io { op: "replace", path: file.to_path_buf(), source: e }
    })
}

// ---------------------------------------------------------------------------
// Finding source entries in a document.

/// A source entry and the package it belongs to.
struct Located<'a> {
    package: String,
    entry: Entry<'a>,
}

impl Located<'_> {
    fn matches(&self, target: &PinTarget) -> bool {
        let Some(url) = self.entry.get_str("url") else { return false };
        let filename = self.entry.get_str("name").or_else(|| url_filename(&url));
        self.package == target.package && url == target.url && filename.as_deref() == Some(target.filename.as_str())
    }
}

/// Recipe files: `[[source]]` under `[package] name`. Overlays: `sources` and `patches` of
/// each `[[override]]`, written as inline tables or as `[[override.sources]]`.
fn source_entries(doc: &mut DocumentMut) -> Vec<Located<'_>> {
    let package = doc.get("package").and_then(|p| p.get("name")).and_then(Item::as_str).map(str::to_string);
    let mut found = Vec::new();
    if let Some(package) = package {
        if let Some(item) = doc.get_mut("source") {
            found.extend(entries_of(item).into_iter().map(|entry| Located { package: package.clone(), entry }));
        }
        return found;
    }
    let Some(overrides) = doc.get_mut("override").and_then(Item::as_array_of_tables_mut) else { return found };
    for table in overrides.iter_mut() {
        let Some(package) = table.get("package").and_then(Item::as_str).map(str::to_string) else { continue };
        for (key, item) in table.iter_mut() {
            if key == "sources" || key == "patches" {
                found.extend(entries_of(item).into_iter().map(|entry| Located { package: package.clone(), entry }));
            }
        }
    }
    found
}

fn entries_of(item: &mut Item) -> Vec<Entry<'_>> {
    match item {
        Item::ArrayOfTables(tables) => tables.iter_mut().map(Entry::Table).collect(),
        Item::Value(Value::Array(array)) => array.iter_mut().filter_map(Value::as_inline_table_mut).map(Entry::Inline).collect(),
        _ => Vec::new(),
    }
}

/// A source entry, written as a table or as an inline table.
enum Entry<'a> {
    Table(&'a mut Table),
    Inline(&'a mut InlineTable),
}

impl Entry<'_> {
    fn get_str(&self, key: &str) -> Option<String> {
        let value = match self {
            Entry::Table(t) => t.get(key).and_then(Item::as_value),
            Entry::Inline(t) => t.get(key),
        };
        value.and_then(Value::as_str).map(str::to_string)
    }

    fn get_strings(&self, key: &str) -> Vec<String> {
        let value = match self {
            Entry::Table(t) => t.get(key).and_then(Item::as_value),
            Entry::Inline(t) => t.get(key),
        };
        value
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Set a string value, keeping the old value's spacing and comments (a new key goes last).
    fn set_str(&mut self, key: &str, text: &str) {
        let slot = match self {
            Entry::Table(t) => match t.get_mut(key).and_then(Item::as_value_mut) {
                Some(value) => value,
                None => {
                    t.insert(key, toml_edit::value(text));
                    return;
                }
            },
            Entry::Inline(t) => match t.get_mut(key) {
                Some(value) => value,
                None => {
                    t.insert(key, Value::from(text));
                    return;
                }
            },
        };
        let decor = slot.decor().clone();
        *slot = Value::from(text);
        *slot.decor_mut() = decor;
    }

    fn keys(&self) -> Vec<String> {
        match self {
            Entry::Table(t) => t.iter().map(|(k, _)| k.to_string()).collect(),
            Entry::Inline(t) => t.iter().map(|(k, _)| k.to_string()).collect(),
        }
    }

    /// Replace whichever checksum key is present by `sha256 = "hex"` at the same place (new:
    /// at the end), keeping the old key's leading comments.
    fn set_sha256(&mut self, hex: &str, note: Option<&str>) {
        let order = self.keys();
        let old = CHECKSUM_KEYS.iter().find(|k| order.iter().any(|o| o == *k)).copied();
        let rank = |key: &str| {
            let key = if key == "sha256" { old.unwrap_or("sha256") } else { key };
            order.iter().position(|k| k == key).unwrap_or(usize::MAX)
        };
        let by_rank = |a: &Key, b: &Key| -> Ordering { rank(a.get()).cmp(&rank(b.get())) };
        match self {
            Entry::Table(t) => {
                let key = replaced_key(old.and_then(|o| t.key(o)));
                let mut value = Value::from(hex);
                if let Some(note) = note {
                    value.decor_mut().set_suffix(format!("  # {note}"));
                }
                for k in CHECKSUM_KEYS {
                    t.remove(k);
                }
                t.insert_formatted(&key, Item::Value(value));
                t.sort_values_by(|a, _, b, _| by_rank(a, b));
            }
            Entry::Inline(t) => {
                let key = replaced_key(old.and_then(|o| t.key(o)));
                // Keep the spacing the old value had (e.g. `md5 = "..." }`).
                let decor = old.and_then(|o| t.get(o)).map(|v| v.decor().clone());
                let mut value = Value::from(hex);
                if let Some(decor) = decor {
                    *value.decor_mut() = decor;
                }
                for k in CHECKSUM_KEYS {
                    t.remove(k);
                }
                t.insert_formatted(&key, value);
                t.sort_values_by(|a, _, b, _| by_rank(a, b));
            }
        }
    }
}

/// The `sha256` key, carrying the replaced key's decoration (leading comments, indentation).
fn replaced_key(old: Option<&Key>) -> Key {
    match old {
        Some(old) => Key::new("sha256").with_leaf_decor(old.leaf_decor().clone()),
        None => Key::new("sha256"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn sha() -> Checksum {
        Checksum::parse("sha256", SHA).unwrap()
    }

    fn target(file: &Path, package: &str, url: &str, filename: &str) -> PinTarget {
        PinTarget { file: file.into(), package: package.into(), url: url.into(), filename: filename.into() }
    }

    #[test]
    fn md5_is_replaced_in_place_keeping_comments() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        let before = "# top comment\n[package]\nname = \"x\" # the name\nversion = \"1\"\n\n\
                      [[source]]\nurl = \"http://h/x-1.tar.gz\"\n# published in the book\nmd5 = \"0123456789abcdef0123456789abcdef\"\nname = \"x.tgz\"\n\n\
                      # build it\n[build]\nscript = 'true'\n";
        fs::write(&file, before).unwrap();
        pin_sha256(&target(&file, "x", "http://h/x-1.tar.gz", "x.tgz"), &sha(), Some("verified against md5")).unwrap();
        let after = fs::read_to_string(&file).unwrap();
        let expected = before.replace(
            "md5 = \"0123456789abcdef0123456789abcdef\"",
            &format!("sha256 = \"{SHA}\"  # verified against md5"),
        );
        assert_eq!(after, expected);
    }

    #[test]
    fn a_missing_checksum_is_added_to_the_right_entry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        let before = "[package]\nname = \"x\"\nversion = \"1\"\n\n[[source]]\nurl = \"http://h/a.tgz\"\n\n[[source]]\nurl = \"http://h/b.tgz\"\n\n[build]\nscript = 'true'\n";
        fs::write(&file, before).unwrap();
        let unpinned = unpinned_url_sources(&file, &[]).unwrap();
        assert_eq!(unpinned.len(), 2);
        assert_eq!(unpinned[1].target, target(&file, "x", "http://h/b.tgz", "b.tgz"));
        pin_sha256(&unpinned[1].target, &sha(), None).unwrap();
        let after = fs::read_to_string(&file).unwrap();
        assert_eq!(after, before.replace("b.tgz\"\n", &format!("b.tgz\"\nsha256 = \"{SHA}\"\n")));
        assert_eq!(unpinned_url_sources(&file, &[]).unwrap().len(), 1);
        assert!(unpinned_url_sources(&file, &["other".into()]).unwrap().is_empty());
    }

    #[test]
    fn overlay_inline_sources_are_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("o.toml");
        let before = "[[override]]\npackage = \"x\"\nsources = [\n  { url = \"http://h/a.tgz\", md5 = \"0123456789abcdef0123456789abcdef\" },\n]\n";
        fs::write(&file, before).unwrap();
        pin_sha256(&target(&file, "x", "http://h/a.tgz", "a.tgz"), &sha(), Some("not in inline tables")).unwrap();
        let after = fs::read_to_string(&file).unwrap();
        assert_eq!(after, before.replace("md5 = \"0123456789abcdef0123456789abcdef\"", &format!("sha256 = \"{SHA}\"")));
        // The result still parses as an overlay.
        crate::recipe::load_overlay(&file).unwrap();
    }

    #[test]
    fn an_unknown_target_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        fs::write(&file, "[package]\nname = \"x\"\nversion = \"1\"\n[[source]]\nurl = \"http://h/a.tgz\"\n").unwrap();
        let err = pin_sha256(&target(&file, "x", "http://h/other.tgz", "other.tgz"), &sha(), None).unwrap_err();
        assert!(matches!(err, PinError::NotFound { .. }), "{err}");
        let err = pin_sha256(&target(&file, "y", "http://h/a.tgz", "a.tgz"), &sha(), None).unwrap_err();
        assert!(matches!(err, PinError::NotFound { .. }), "{err}");
    }
}
