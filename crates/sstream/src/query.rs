//! `sstream query` / `sstream-query`: list the items of a stream.

use crate::cli::QueryArgs;
use crate::pyformat::{format_item, json_list, pprint_dict, repr_dict};
use simplestreams::filter::FilterSet;
use simplestreams::metadata::{MetadataReader, read_stream};
use simplestreams::plan::MirrorOptions;
use simplestreams::source::{Source, TransferOptions};
use std::io::{ErrorKind, Write};

/// Runs a query and prints the items.
pub fn run(args: QueryArgs) -> Result<(), String> {
    args.stream.init_logging()?;
    let filters = FilterSet::parse(&args.filters).map_err(|e| e.to_string())?;
    let (spec, verification) = args.stream.open(&args.mirror_url)?;
    let source = Source::new(spec.root.clone(), Vec::new(), TransferOptions::default())
        .map_err(|e| e.to_string())?;
    let options = MirrorOptions {
        filters,
        max: args.max,
        item_download: true,
        ..MirrorOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let stream = runtime.block_on(async {
        let reader = MetadataReader::new(source, &spec.entry, verification);
        read_stream(&reader, &spec.entry)
            .await
            .map_err(|e| e.to_string())
    })?;
    let items = simplestreams::query::query(stream, &spec.root, &options);
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        writeln!(out, "{}", json_list(&items))
    } else {
        let mut result = Ok(());
        for item in &items {
            let text = match &args.output_format {
                Some(fmt) => format_item(fmt, item).map_err(|e| {
                    format!(
                        "--output-format {fmt:?}: {e} ({})",
                        item.get("item_url").unwrap_or_default()
                    )
                })?,
                None if args.pretty => pprint_dict(item),
                None => repr_dict(item),
            };
            result = writeln!(out, "{text}");
            if result.is_err() {
                break;
            }
        }
        result
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("stdout: {e}")),
    }
}
