//! `sstream query` / `sstream-query`: list the items of a stream.

use crate::error::CliError;
use crate::pyformat::{format_item, json_list, pprint_dict, repr_dict};
use crate::stream_args::StreamArgs;
use clap::Args;
use simplestreams::filter::FilterGroups;
use simplestreams::metadata::{MetadataReader, read_stream};
use simplestreams::plan::MirrorOptions;
use simplestreams::source::{Source, TransferOptions};
use std::io::{ErrorKind, Write};
use std::process::ExitCode;

/// Options shared by `sstream query` and the drop-in `sstream-query`.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// At most MAX versions of each product (the newest).
    #[arg(long, value_name = "MAX_ITEMS")]
    pub max: Option<usize>,
    /// Python %-style format over the flattened item, e.g. '%(item_url)s'.
    #[arg(long, short = 'o', conflicts_with_all = ["pretty", "json"])]
    pub output_format: Option<String>,
    /// Pretty-print each item.
    #[arg(long, conflicts_with = "json")]
    pub pretty: bool,
    /// Print the items as a JSON list.
    #[arg(long)]
    pub json: bool,
    /// Where the stream's entry is, how it is verified, and logging.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The source: a URL (http, https, file) or a directory.
    pub mirror_url: String,
    /// Filters: KEY=VALUE, KEY!=VALUE, KEY~REGEX, KEY!~REGEX.
    pub filters: Vec<String>,
}

/// Runs a query and prints the items.
pub fn run(args: QueryArgs) -> Result<ExitCode, CliError> {
    args.stream.init_logging()?;
    let filters = FilterGroups::parse(&[&args.filters])?;
    let (spec, verification) = args.stream.open(&args.mirror_url)?;
    let source = Source::new(spec.root.clone(), Vec::new(), TransferOptions::default())?;
    let options = MirrorOptions {
        filters,
        max: args.max,
        item_download: true,
        ..MirrorOptions::default()
    };
    let runtime = crate::runtime()?;
    let reader = MetadataReader::new(source, spec.entry, verification);
    let stream = runtime.block_on(read_stream(&reader, None))?;
    let items = simplestreams::query::query(stream, &spec.root, &options);
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        writeln!(out, "{}", json_list(&items))
    } else {
        let mut result = Ok(());
        for item in &items {
            let text = match &args.output_format {
                Some(fmt) => format_item(fmt, item).map_err(|e| {
                    anyhow::anyhow!(
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
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(anyhow::Error::new(e).context("stdout").into()),
    }
}
