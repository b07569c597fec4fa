//! The OT-side daemon: sources poll the plant, the tag table keeps current values, and the link
//! sender pushes them one way across the diode.

pub mod tags;
