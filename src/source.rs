//! Sources: make each `[[source]]` of a derivation present in the store (from a
//! local file, a URL and its mirrors, or a Debian package), verified against its
//! checksum, and stage them into a build's `$FORGE_SOURCES`.
