//! The catalogue: the ordered tag list, its hash, chunking for the link and reassembly.
