//! Metadata parsing: products and index documents. Whatever parses must
//! round-trip through `to_value` and name only safe paths.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simplestreams::format::{Index, Products, document_format, flatten};
use simplestreams::path::RelPath;

fuzz_target!(|data: &[u8]| {
    let _ = document_format("fuzz", data);
    if let Ok(index) = Index::parse("fuzz", data) {
        for entry in index.entries.values() {
            if let Some(p) = &entry.path {
                assert!(RelPath::parse(p.as_str()).is_ok());
            }
        }
    }
    if let Ok(products) = Products::parse("fuzz", data) {
        for (pname, product) in &products.products {
            for (vname, version) in &product.versions {
                for (iname, item) in &version.items {
                    if let Some(p) = &item.path {
                        assert!(RelPath::parse(p.as_str()).is_ok());
                    }
                    let _ = flatten(&products, pname, vname, iname);
                }
            }
        }
        // What we would write as `.data/<content_id>` must read back
        // (`DirStore::load_state` reads it with `from_map`).
        let serde_json::Value::Object(map) = products.to_value() else {
            panic!("to_value is not an object");
        };
        let back = Products::from_map("fuzz-roundtrip", map)
            .expect("a parsed products tree must parse again");
        assert_eq!(back.products.len(), products.products.len());
    }
});
