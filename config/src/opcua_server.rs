//! gateway-rx's OPC UA mirror server: the `[opcua_server]` section.
