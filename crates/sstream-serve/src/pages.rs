//! HTML pages: directory listings and the landing page.
//!
//! Everything that comes from the file system or the request (names, content
//! ids, product names, the Host header) is escaped.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use simplestreams::units::human_size;

use crate::paths::{is_hidden, url_path};
use crate::root::{Resolved, Root};
use crate::summary::{StreamSummary, mirror_streams, offered_not_held, version_age};
use simplestreams::status::{StatusRecord, Verified};

/// Keyring MAAS should verify a signed mirror with: metadata files are
/// copied byte for byte, so the upstream signatures stay valid.
const UBUNTU_KEYRING: &str = "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg";

/// How deep under the served directory mirrors are looked for.
const MIRROR_SEARCH_DEPTH: usize = 6;
/// At most this many directories are looked at when searching for mirrors.
const MIRROR_SEARCH_DIRS: usize = 2000;

/// Escapes text for HTML element content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A visible directory entry.
struct Entry {
    name: OsString,
    is_dir: bool,
    size: u64,
    mtime: Option<SystemTime>,
}

/// The visible entries of the directory `dir` (at `segments`), directories
/// first, then by name: those a request for them would get, resolved as a
/// request is (hidden names, special files and symbolic links that leave
/// the root are left out).
fn read_entries(root: &Root, segments: &[OsString], dir: &Resolved) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir(root.path(dir))? {
        let Ok(ent) = ent else { continue };
        let name = ent.file_name();
        if is_hidden(name.as_bytes()) {
            continue;
        }
        let mut segs = segments.to_vec();
        segs.push(name.clone());
        let Ok(resolved) = root.resolve(&segs) else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(root.path(&resolved)) else {
            continue;
        };
        if !meta.is_dir() && !meta.is_file() {
            continue;
        }
        out.push(Entry {
            name,
            is_dir: meta.is_dir(),
            size: meta.len(),
            mtime: meta.modified().ok(),
        });
    }
    out.sort_by(|a, b| {
        b.is_dir
            .cmp(&a.is_dir)
            .then_with(|| a.name.as_bytes().cmp(b.name.as_bytes()))
    });
    Ok(out)
}

/// Start of every page.
fn page_start(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>\
         body{{font-family:sans-serif;margin:1.5em;max-width:70em}}\
         table{{border-collapse:collapse}}\
         td,th{{padding:.15em .8em;text-align:left;vertical-align:top}}\
         td.n{{text-align:right;font-variant-numeric:tabular-nums}}\
         tr:nth-child(even){{background:#f3f3f3}}\
         pre,code{{background:#f3f3f3;overflow-wrap:anywhere}}\
         pre{{padding:.6em;white-space:pre-wrap}}\
         .wide{{overflow-x:auto;max-width:100%}}.warn{{color:#840;font-weight:bold}}\
         .error{{color:#a00}}\
         </style></head><body>\n",
        esc(title)
    )
}

const PAGE_END: &str = "</body></html>\n";

/// The entries of a directory as an HTML table.
fn entries_table(segments: &[OsString], entries: &[Entry]) -> String {
    let mut html =
        String::from("<table>\n<tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr>\n");
    if !segments.is_empty() {
        let parent = url_path(&segments[..segments.len() - 1], true);
        let _ = writeln!(
            html,
            "<tr><td><a href=\"{}\">../</a></td><td></td><td></td></tr>",
            esc(&parent)
        );
    }
    for e in entries {
        let mut segs = segments.to_vec();
        segs.push(e.name.clone());
        let href = url_path(&segs, e.is_dir);
        let name = e.name.to_string_lossy();
        let (label, size) = if e.is_dir {
            (format!("{name}/"), String::from("-"))
        } else {
            (
                name.into_owned(),
                format!(
                    "<span title=\"{} bytes\">{}</span>",
                    e.size,
                    human_size(e.size)
                ),
            )
        };
        let _ = writeln!(
            html,
            "<tr><td><a href=\"{}\">{}</a></td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&href),
            esc(&label),
            size,
            e.mtime.map(utc_time).unwrap_or_default()
        );
    }
    html.push_str("</table>\n");
    html
}

/// The listing page of the directory at `segments` (already checked and
/// resolved to `dir`).
pub(crate) fn listing_page(
    root: &Root,
    segments: &[OsString],
    dir: &Resolved,
) -> std::io::Result<String> {
    let entries = read_entries(root, segments, dir)?;
    let shown = {
        let mut s = String::from("/");
        for seg in segments {
            s.push_str(&seg.to_string_lossy());
            s.push('/');
        }
        s
    };
    let mut html = page_start(&format!("Index of {shown}"));
    // Breadcrumbs: each ancestor is a link.
    html.push_str("<h1>Index of <a href=\"/\">/</a>");
    for i in 0..segments.len() {
        let _ = write!(
            html,
            "<a href=\"{}\">{}/</a>",
            esc(&url_path(&segments[..=i], true)),
            esc(&segments[i].to_string_lossy())
        );
    }
    html.push_str("</h1>\n<p><a href=\"/\">Mirror overview</a></p>\n");
    html.push_str(&entries_table(segments, &entries));
    html.push_str(PAGE_END);
    Ok(html)
}

/// A mirror found under the served directory.
struct Mirror {
    /// Path segments from the served root to the mirror root.
    segments: Vec<OsString>,
    /// A path that reaches the mirror root (through the served root).
    path: PathBuf,
    /// Whether the index is the signed `index.sjson`.
    signed: bool,
}

/// Finds directories holding `streams/v1/index.sjson` (or `index.json`) at
/// or under `root`. Does not descend into mirrors, hidden directories or
/// symbolic links.
fn find_mirrors(root: &Root) -> Vec<Mirror> {
    let mut found = Vec::new();
    let mut queue = std::collections::VecDeque::from([(Resolved::top(), Vec::new())]);
    let mut visited = 0;
    while let Some((resolved, segments)) = queue.pop_front() {
        visited += 1;
        if visited > MIRROR_SEARCH_DIRS {
            break;
        }
        let dir = root.path(&resolved);
        let v1 = dir.join("streams").join("v1");
        let signed = v1.join("index.sjson").is_file();
        if signed || v1.join("index.json").is_file() {
            found.push(Mirror {
                segments,
                path: dir,
                signed,
            });
            continue;
        }
        if segments.len() >= MIRROR_SEARCH_DEPTH {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut subdirs: Vec<_> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name())
            .filter(|n| !is_hidden(n.as_bytes()))
            .collect();
        subdirs.sort();
        for name in subdirs {
            let mut segs = segments.clone();
            segs.push(name);
            if let Ok(sub) = root.resolve(&segs) {
                queue.push_back((sub, segs));
            }
        }
    }
    found
}

/// The landing page: how to point MAAS at each mirror found, what each
/// holds, and the entries of the served directory.
/// `origin` is the scheme and host clients reach the server by
/// (`https://mirror.example:8443`); `metrics`: whether `/metrics` is served.
pub(crate) fn landing(root: &Root, origin: &str, metrics: bool) -> String {
    let mut html = page_start("SimpleStreams mirror");
    html.push_str("<h1>SimpleStreams mirror</h1>\n");
    let mirrors = find_mirrors(root);
    if mirrors.is_empty() {
        html.push_str(
            "<p>No <code>streams/v1/index.sjson</code> or <code>streams/v1/index.json</code> \
             found here yet.</p>\n",
        );
    }
    if metrics {
        html.push_str(
            "<p>Prometheus metrics of these mirrors: <a href=\"/metrics\">/metrics</a></p>\n",
        );
    }
    let views = served_views(&mirrors);
    for m in &mirrors {
        mirror_section(&mut html, root, m, origin, &views);
    }
    html.push_str("<h2>Files</h2>\n");
    match read_entries(root, &[], &Resolved::top()) {
        Ok(entries) => html.push_str(&entries_table(&[], &entries)),
        Err(e) => {
            let _ = writeln!(
                html,
                "<p class=\"error\">Cannot list the directory: {}</p>",
                esc(&e.to_string())
            );
        }
    }
    html.push_str(PAGE_END);
    html
}

/// The Prometheus metrics of every mirror under `root` (`serve --metrics`),
/// from the status records `sstream sync` writes.
pub(crate) fn metrics(root: &Root) -> String {
    let mirrors = find_mirrors(root);
    let records: Vec<_> = mirrors
        .iter()
        .flat_map(|m| status_records(&m.path))
        .collect();
    let views: Vec<_> = served_views(&mirrors)
        .iter()
        .map(|v| simplestreams::metrics::ViewSample::of(&v.path, &v.state))
        .collect();
    simplestreams::metrics::render_with_views(&records, &views, SystemTime::now())
}

/// The state of the view at `m`, when it is a view
/// ([`simplestreams::view`]: a directory showing a snapshot of a mirror).
fn view_state(m: &Mirror) -> Option<simplestreams::view::ViewState> {
    simplestreams::view::state(&m.path).ok().flatten()
}

/// A view found under the served directory: where it is served, and its
/// state.
struct ServedView {
    /// Its URL path (`/views/staging/`).
    path: String,
    state: simplestreams::view::ViewState,
}

/// The views among the directories found.
fn served_views(found: &[Mirror]) -> Vec<ServedView> {
    found
        .iter()
        .filter_map(|m| {
            Some(ServedView {
                path: url_path(&m.segments, true),
                state: view_state(m)?,
            })
        })
        .collect()
}

/// The rows of a mirror's section naming the views served here that show
/// its snapshots, each with the snapshot it shows.
fn views_of_mirror_rows(html: &mut String, m: &Mirror, views: &[ServedView]) {
    let Ok(mirror) = std::fs::canonicalize(&m.path) else {
        return;
    };
    for v in views {
        if std::fs::canonicalize(&v.state.mirror).ok().as_ref() != Some(&mirror) {
            continue;
        }
        let _ = writeln!(
            html,
            "<tr><th>View</th><td><a href=\"{p}\">{p}</a> shows snapshot \
             <strong>{s}</strong> (published {t})</td></tr>",
            p = esc(&v.path),
            s = esc(&v.state.snapshot),
            t = esc(&v.state.published.to_string()),
        );
    }
}

/// The rows of a view's section: the snapshot it shows, how old, when it
/// was published, what it lists and where a rollback goes.
fn view_rows(html: &mut String, state: &simplestreams::view::ViewState) {
    let now = SystemTime::now();
    let created = simplestreams::snapshot::list(&state.mirror)
        .ok()
        .and_then(|all| all.into_iter().find(|s| s.name == state.snapshot))
        .map(|s| s.created);
    let made = created.map_or_else(String::new, |t| {
        format!(", made {} ({} ago)", t, short_age(t.age(now)))
    });
    let _ = writeln!(
        html,
        "<tr><th>Snapshot</th><td><strong>{snapshot}</strong>{made}</td></tr>\n\
         <tr><th>Published</th><td>{published} ({age} ago)</td></tr>\n\
         <tr><th>Lists</th><td>{items} item(s), {size}{filters}</td></tr>",
        snapshot = esc(&state.snapshot),
        made = esc(&made),
        published = esc(&state.published.to_string()),
        age = short_age(state.published.age(now)),
        items = state.items,
        size = human_size(state.bytes),
        filters = if state.filters.is_empty() {
            String::new()
        } else {
            format!(" (filters: <code>{}</code>)", esc(&state.filters.join(" ")))
        },
    );
    if let Some(previous) = state.history.last() {
        let _ = writeln!(
            html,
            "<tr><th>Rollback to</th><td>{}</td></tr>",
            esc(&previous.snapshot)
        );
    }
}

/// The status records of the mirror at `path` (none when unreadable).
fn status_records(path: &Path) -> Vec<StatusRecord> {
    simplestreams::status::read_all(&simplestreams::store::DirStore::new(path)).unwrap_or_default()
}

/// The landing page's rows about the last syncs of a mirror: the upstream
/// each run mirrors, and when it ended, how long ago, and how.
fn sync_rows(html: &mut String, records: &[StatusRecord]) {
    let now = SystemTime::now();
    let mut upstreams: Vec<&str> = records.iter().map(|r| r.source.as_str()).collect();
    upstreams.dedup();
    for upstream in upstreams {
        let _ = writeln!(
            html,
            "<tr><th>Upstream</th><td><code>{}</code></td></tr>",
            esc(upstream)
        );
    }
    for r in records {
        let result = if r.is_ok() { "ok" } else { "FAILED" };
        let success = r
            .last_success
            .map_or_else(|| "never".to_owned(), |t| t.to_string());
        let _ = writeln!(
            html,
            "<tr><th>Last sync ({job})</th><td>{finished} ({age} ago): <strong>{result}</strong>; \
             last success {success}{errors}</td></tr>",
            job = esc(&r.job),
            finished = esc(&r.finished.to_string()),
            age = short_age(r.finished.age(now)),
            success = esc(&success),
            errors = r
                .errors
                .first()
                .map(|e| format!(" ({})", esc(e)))
                .unwrap_or_default(),
        );
    }
}

/// An age in its largest unit or two (`3d 4h`, `5h 12m`, `40s`).
fn short_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// The full fingerprints of the Ubuntu cloud image signing keys (those of
/// `ubuntu-cloudimage-keyring.gpg`: the UEC image key and the cloud image
/// builder's, which signs images.maas.io).
const UBUNTU_FINGERPRINTS: [&str; 2] = [
    "D2EB44626FDDC30B513D5BB71A5D6C4C7DB87C81",
    "4A3CE3CD565D7EB5C810E2B97FF3F408476CF100",
];

/// Whether every key of `fingerprints` is an Ubuntu cloud image key.
fn is_ubuntu_key(fingerprints: &[String]) -> bool {
    !fingerprints.is_empty()
        && fingerprints
            .iter()
            .all(|f| UBUNTU_FINGERPRINTS.contains(&f.to_ascii_uppercase().as_str()))
}

/// The keys the status records say upstream's documents were verified
/// with: `None` when no record says, else the fingerprints (empty: a run
/// was unverified).
fn recorded_keys(records: &[StatusRecord]) -> Option<Vec<String>> {
    let mut keys: Option<Vec<String>> = None;
    for r in records {
        match &r.verified_with {
            Some(Verified::Keyring(f)) => keys.get_or_insert_default().extend(f.iter().cloned()),
            Some(Verified::Unverified) => {
                keys.get_or_insert_default();
            }
            None => {}
        }
    }
    keys.map(|mut k| {
        k.sort();
        k.dedup();
        k
    })
}

/// The file at `rel` under the directory at `segments`, when a request for
/// it would be served (resolved as a request is).
fn read_served(root: &Root, segments: &[OsString], rel: &str) -> Option<Vec<u8>> {
    let mut segs = segments.to_vec();
    segs.extend(rel.split('/').map(OsString::from));
    let resolved = root.resolve(&segs).ok()?;
    std::fs::read(root.path(&resolved)).ok()
}

/// The section of the landing page about one mirror.
fn mirror_section(html: &mut String, root: &Root, m: &Mirror, origin: &str, views: &[ServedView]) {
    let base = url_path(&m.segments, true);
    let index = if m.signed {
        "index.sjson"
    } else {
        "index.json"
    };
    // MAAS fetches streams/v1/index.sjson under the URL it is given, unless
    // the URL names a file: an unsigned mirror is given by its index.
    let source = if m.signed {
        format!("{origin}{base}")
    } else {
        format!("{origin}{base}streams/v1/index.json")
    };
    let view = view_state(m);
    let _ = writeln!(
        html,
        "<h2>{what} at <a href=\"{b}\">{b}</a></h2>",
        what = if view.is_some() { "View" } else { "Mirror" },
        b = esc(&base)
    );
    html.push_str("<div class=\"wide\"><table>\n");
    let _ = writeln!(
        html,
        "<tr><th>Boot-source URL</th><td><code>{}</code></td></tr>",
        esc(&source)
    );
    let _ = writeln!(
        html,
        "<tr><th>Index</th><td><a href=\"{h}\">{t}</a></td></tr>",
        h = esc(&format!("{base}streams/v1/{index}")),
        t = esc(&format!("streams/v1/{index}"))
    );
    let local_ring = if m.signed {
        read_served(root, &m.segments, simplestreams::layout::MIRROR_KEYRING)
    } else {
        None
    };
    let records = status_records(&m.path);
    // Keys other than Ubuntu's that the records name (empty: Ubuntu's, or
    // no record says).
    let upstream_keyring = recorded_keys(&records)
        .filter(|k| !k.is_empty() && !is_ubuntu_key(k))
        .unwrap_or_default();
    if let Some(ring) = &local_ring {
        let _ = writeln!(
            html,
            "<tr><th>Keyring</th><td>this mirror's own key (the metadata lists what it \
             holds and is re-signed): <a href=\"{h}\">{t}</a></td></tr>\n\
             <tr><th>keyring_data</th><td><code>{b}</code></td></tr>",
            h = esc(&format!("{base}{}", simplestreams::layout::MIRROR_KEYRING)),
            t = esc(simplestreams::layout::MIRROR_KEYRING),
            b = esc(&base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                ring
            ))
        );
    } else if m.signed && !upstream_keyring.is_empty() {
        let _ = writeln!(
            html,
            "<tr><th>Keyring</th><td>a keyring holding the key(s) the last sync verified \
             upstream's documents with: <code>{}</code> (not the Ubuntu cloud image key; the \
             metadata is signed by upstream and copied unchanged)</td></tr>",
            esc(&upstream_keyring.join(", "))
        );
    } else if m.signed {
        let _ = writeln!(
            html,
            "<tr><th>Keyring</th><td><code>{UBUNTU_KEYRING}</code> (the metadata is \
             signed by upstream and copied unchanged)</td></tr>"
        );
    } else {
        html.push_str(
            "<tr><th>Keyring</th><td>none: the index is unsigned \
             (<code>index.json</code>)</td></tr>\n",
        );
    }
    let _ = writeln!(
        html,
        "<tr><th>Browse</th><td><a href=\"{b}\">{b}</a>, <a href=\"{s}\">{s}</a></td></tr>",
        b = esc(&base),
        s = esc(&format!("{base}streams/v1/"))
    );
    if let Some(state) = &view {
        view_rows(html, state);
    } else {
        views_of_mirror_rows(html, m, views);
    }
    sync_rows(html, &records);
    let not_held = offered_not_held(
        &simplestreams::store::DirStore::new(&m.path),
        &format!("streams/v1/{index}"),
        &|rel| read_served(root, &m.segments, rel),
    );
    // A view keeps no mirror state: what it lists is its snapshot's.
    if view.is_none() && (not_held.versions > 0 || not_held.items > 0) {
        let _ = writeln!(
            html,
            "<tr><th>Warning</th><td class=\"warn\">the served metadata offers {v} version(s) \
             and {i} item(s) this mirror does not hold: clients that ask for them fail. \
             Publish only what it holds: mirror with <code>--sign-key</code> (re-signed \
             metadata, this mirror's own key).</td></tr>",
            v = not_held.versions,
            i = not_held.items
        );
    }
    html.push_str("</table></div>\n");

    let keyring = if local_ring.is_some() {
        " keyring_filename= keyring_data@=mirror-keyring.gpg".to_owned()
    } else if m.signed && !upstream_keyring.is_empty() {
        " keyring_filename=/path/to/keyring-with-the-key-above.gpg".to_owned()
    } else if m.signed {
        format!(" keyring_filename={UBUNTU_KEYRING}")
    } else {
        String::new()
    };
    let _ = writeln!(
        html,
        "<p>Point MAAS at it (replace the default boot source):</p>\n\
         <pre>maas $PROFILE boot-source update 1 url={s}{k}\n\
         maas $PROFILE boot-resources import</pre>\n\
         <p>or add it as another boot source:</p>\n\
         <pre>maas $PROFILE boot-sources create url={s}{k}\n\
         maas $PROFILE boot-resources import</pre>",
        s = esc(&source),
        k = esc(&keyring)
    );

    if view.is_some() {
        return;
    }
    html.push_str("<h3>Mirrored streams</h3>\n");
    match mirror_streams(&m.path) {
        None => html.push_str(
            "<p>No mirror state (<code>.data/</code>): nothing recorded about what was \
             mirrored.</p>\n",
        ),
        Some(streams) if streams.is_empty() => {
            html.push_str("<p>Nothing mirrored yet.</p>\n");
        }
        Some(streams) => {
            for result in streams {
                match &*result {
                    Ok(s) => stream_section(html, s),
                    Err(e) => {
                        let _ = writeln!(html, "<p class=\"error\">{}</p>", esc(&e.to_string()));
                    }
                }
            }
        }
    }
}

/// One stream of the landing page.
fn stream_section(html: &mut String, s: &StreamSummary) {
    let _ = writeln!(html, "<h4><code>{}</code></h4>", esc(&s.content_id));
    let _ = writeln!(
        html,
        "<p>{} product(s), {} in all{}{}</p>",
        s.products.len(),
        human_size(s.total),
        if s.updated.is_empty() {
            String::new()
        } else {
            format!(", updated {}", esc(&s.updated))
        },
        if s.format.is_empty() {
            String::new()
        } else {
            format!(", format <code>{}</code>", esc(&s.format))
        },
    );
    if s.products.is_empty() {
        return;
    }
    let now = SystemTime::now();
    html.push_str(
        "<div class=\"wide\"><table>\n<tr><th>OS</th><th>Release</th><th>Arch</th>\
         <th>Kernel flavour</th><th>Version</th><th>Versions</th><th>Files</th>\
         <th>Size</th><th>Age</th></tr>\n",
    );
    for p in &s.products {
        let size = if p.unsized_items > 0 {
            format!("{} + {} unknown", human_size(p.size), p.unsized_items)
        } else {
            human_size(p.size)
        };
        let age = version_age(&p.newest, now).map_or_else(String::new, short_age);
        let _ = writeln!(
            html,
            "<tr title=\"{id}\">{what}<td>{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\"><span title=\"{} bytes\">{}</span></td><td class=\"n\">{}</td></tr>",
            esc(&p.newest),
            p.versions,
            p.items,
            p.size,
            size,
            age,
            id = esc(&p.name),
            what = if [&p.os, &p.release, &p.arch, &p.subarch]
                .iter()
                .all(|f| f.is_empty())
            {
                // Not a MAAS image: the product's id says what it is.
                format!("<td colspan=\"4\"><code>{}</code></td>", esc(&p.name))
            } else {
                format!(
                    "<td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                    esc(&p.os),
                    esc(&p.release),
                    esc(&p.arch),
                    esc(&p.subarch)
                )
            },
        );
    }
    html.push_str("</table></div>\n");
}

/// A time as `YYYY-MM-DD HH:MM:SS` in UTC.
fn utc_time(t: SystemTime) -> String {
    let Ok(d) = t.duration_since(UNIX_EPOCH) else {
        return String::new();
    };
    let secs = d.as_secs();
    let (days, rest) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_and_sizes() {
        assert_eq!(utc_time(UNIX_EPOCH), "1970-01-01 00:00:00");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199); // 2024-02-29 23:59:59
        assert_eq!(utc_time(t), "2024-02-29 23:59:59");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(512 * 1024 * 1024), "512.0 MiB");
    }

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
