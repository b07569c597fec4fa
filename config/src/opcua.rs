//! gateway-tx's OPC UA sources: `[[opcua]]` endpoints and their `[[opcua.tag]]` entries.
