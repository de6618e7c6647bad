//! Typed wrappers for the bundled applications (placeholder until the handler modules land).

/// MICA key-value store.
pub struct Mica;
/// Cell-style B-tree.
pub struct BTree;
