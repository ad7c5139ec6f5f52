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
        // (as a mirror's state is read, with `parse_state`), the same.
        let state = products.state_json();
        let back = Products::parse_state("fuzz-roundtrip", &state)
            .expect("a parsed products tree must parse again")
            .expect("a state is a JSON object");
        assert_eq!(back.products.len(), products.products.len());
        assert_eq!(back.state_json(), state);
    }
});
