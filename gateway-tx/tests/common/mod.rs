//! What the integration tests share.

use protocol::catalogue::Catalogue;
use protocol::model::{SourceAddress, TagInfo, ValueType};

/// A catalogue of `tags` double tags named `t/0`, `t/1`, ...
pub fn catalogue(tags: u32) -> Catalogue {
    Catalogue::new(
        (0..tags)
            .map(|i| TagInfo {
                name: format!("t/{i}"),
                value_type: ValueType::Double,
                unit: String::new(),
                description: String::new(),
                source: SourceAddress::Other(String::new()),
            })
            .collect(),
    )
}
