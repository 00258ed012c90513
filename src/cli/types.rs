//! `kdleak types`: WinDbg's `dt` on a PDB, offline — a structure's layout as this host reads it
//! (README "`kdleak types`"). The rendering is `kdleak::symbols::dt`; this is the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use kdleak::symbols::isfpack::TableFile;
use kdleak::symbols::{
    dt, IsfSymbols, ModuleSymbols, Pdb, PdbId, SourceKind, SymbolError, SymbolOptions, Symbols,
};

use super::args::SymbolArgs;
use super::Format;

#[derive(clap::Args)]
pub struct TypesArgs {
    /// The PDB file (`ntkrnlmp.pdb`) or ISF table (`GUID-AGE.json.xz`), then the type. Alone,
    /// MODULE!TYPE (`nt!_LIST_ENTRY`), found through the symbol path (or an ISF pack, --isf)
    /// with --guid and --age.
    #[arg(value_name = "PDB|MODULE!TYPE")]
    first: String,
    /// The structure or union (`_MM_DRIVER_VERIFIER_DATA`); with `*` or `?`, lists the matching
    /// names instead (`_VF_*`).
    #[arg(value_name = "TYPE")]
    type_name: Option<String>,
    /// Walk into embedded structures and unions, DEPTH levels: `-r2` (WinDbg's `dt -r2`), or `-r`
    /// alone for 9, after the PDB and type.
    #[arg(
        short = 'r',
        long = "recurse",
        value_name = "DEPTH",
        num_args = 0..=1,
        default_missing_value = "9",
        value_parser = clap::value_parser!(u8).range(0..=dt::MAX_RECURSION as i64)
    )]
    recurse: Option<u8>,
    /// With MODULE!TYPE: the module's PDB GUID, as `kdleak info` prints it (braces and dashes
    /// optional).
    #[arg(long, value_name = "GUID", requires = "age")]
    guid: Option<String>,
    /// With MODULE!TYPE: the module's PDB age (decimal, or hex with 0x).
    #[arg(long, value_name = "AGE", requires = "guid")]
    age: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    symbols: SymbolArgs,
}

/// `kdleak types --format json` (README "`kdleak types`").
#[derive(serde::Serialize)]
struct JsonDoc<'a> {
    schema_version: u32,
    /// The PDB file, or the ISF table.
    pdb: String,
    /// `pdb` or `isf`.
    source: SourceKind,
    guid: &'a str,
    age: u32,
    #[serde(flatten)]
    layout: dt::TypeLayout,
}

/// `kdleak types PDB 'PATTERN' --format json`: the matching names.
#[derive(serde::Serialize)]
struct JsonList<'a> {
    schema_version: u32,
    pdb: String,
    source: SourceKind,
    pattern: &'a str,
    types: Vec<dt::TypeLayout>,
}

/// The PDB a module name stands for: `nt` is the kernel's `ntkrnlmp.pdb`, `x` is `x.pdb`.
fn pdb_name(module: &str) -> String {
    if module.eq_ignore_ascii_case("nt") {
        "ntkrnlmp.pdb".into()
    } else if module.to_ascii_lowercase().ends_with(".pdb") {
        module.into()
    } else {
        format!("{module}.pdb")
    }
}

/// `72E103A8-5CB2-4907-8B76-B2E7C06257B1`, with or without braces and dashes, any case.
fn parse_guid(text: &str) -> Result<String> {
    let hex: String = text
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .chars()
        .filter(|&c| c != '-')
        .collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "--guid {text}: not a GUID (32 hex digits, e.g. 72E103A8-5CB2-4907-8B76-B2E7C06257B1)"
        );
    }
    let h = hex.to_ascii_uppercase();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

fn parse_age(text: &str) -> Result<u32> {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.with_context(|| format!("--age {text}: not a number (decimal, or hex with 0x)"))
}

/// Where the PDB comes from.
enum Source {
    File(PathBuf),
    /// Through the symbol path: a malformed one was a usage error before anything was opened.
    Store(PdbId, SymbolOptions),
}

fn source(args: &TypesArgs) -> Result<(Source, String)> {
    match &args.type_name {
        Some(type_name) => {
            if args.guid.is_some() {
                bail!("--guid/--age find a PDB through the symbol path: give MODULE!TYPE alone, not a PDB file");
            }
            let path = PathBuf::from(&args.first);
            if !path.is_file() {
                bail!("{}: no such PDB file (or ISF table)", path.display());
            }
            // `ntkrnlmp.pdb nt!_X` works too: the module prefix is the file's.
            let type_name = type_name.rsplit('!').next().unwrap_or(type_name);
            Ok((Source::File(path), type_name.to_string()))
        }
        None => {
            let Some((module, type_name)) = args.first.split_once('!') else {
                bail!(
                    "give the PDB file and the type (`kdleak types ntkrnlmp.pdb {0}`), or \
                     MODULE!TYPE with --guid and --age (`kdleak types nt!{0} --guid G --age N`)",
                    args.first
                );
            };
            let (Some(guid), Some(age)) = (&args.guid, &args.age) else {
                bail!(
                    "{}: a module's PDB is found through the symbol path by its GUID and age: add \
                     --guid and --age (as `kdleak info` prints them), or give the PDB file instead",
                    args.first
                );
            };
            if module.is_empty() || type_name.is_empty() {
                bail!("{}: expected MODULE!TYPE, e.g. nt!_LIST_ENTRY", args.first);
            }
            let id = PdbId {
                name: pdb_name(module),
                guid: parse_guid(guid)?,
                age: parse_age(age)?,
            };
            Ok((
                Source::Store(id, args.symbols.options()?),
                type_name.to_string(),
            ))
        }
    }
}

/// True for the file names of ISF tables (`.json`, `.json.xz`, `.json.gz`).
fn is_isf(path: &std::path::Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    [".json", ".json.xz", ".json.gz"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

fn open(source: Source) -> std::result::Result<ModuleSymbols, SymbolError> {
    match source {
        Source::Store(id, options) => Symbols::new(options).load_module_id(&id),
        Source::File(path) if is_isf(&path) => {
            let file = TableFile::File(path);
            let table = IsfSymbols::parse(&file.location(), &file.read()?, "")?;
            Ok(ModuleSymbols::Isf(Arc::new(table)))
        }
        Source::File(path) => Pdb::open(&path).map(|pdb| ModuleSymbols::Pdb(Arc::new(pdb))),
    }
}

fn pretty(doc: &impl serde::Serialize) -> String {
    let text = serde_json::to_string_pretty(doc).expect("plain data serializes");
    format!("{text}\n")
}

/// What the command prints: the layout of `type_name`, or the names matching it when it has
/// `*`/`?` (none matching is a missing type, exit 4).
fn render(
    pdb: &ModuleSymbols,
    type_name: &str,
    args: &TypesArgs,
) -> std::result::Result<String, SymbolError> {
    let table = pdb.types()?;
    if dt::is_pattern(type_name) {
        let found = dt::matching(&table, type_name);
        if found.is_empty() {
            return Err(SymbolError::TypeNotFound {
                pdb: PathBuf::from(pdb.location()),
                type_name: type_name.to_string(),
            });
        }
        return Ok(match args.format {
            Format::Text => found
                .iter()
                .map(|(name, _, _)| format!("          {name}\n"))
                .collect(),
            Format::Json => pretty(&JsonList {
                schema_version: 1,
                pdb: pdb.location(),
                source: pdb.kind(),
                pattern: type_name,
                types: found
                    .into_iter()
                    .map(|(name, kind, size)| dt::TypeLayout {
                        name,
                        kind: dt::kind_word(kind),
                        size,
                        members: None,
                    })
                    .collect(),
            }),
        });
    }
    let layout = dt::layout(&table, type_name, usize::from(args.recurse.unwrap_or(0)))?;
    Ok(match args.format {
        Format::Text => dt::render_text(&layout),
        Format::Json => pretty(&JsonDoc {
            schema_version: 1,
            pdb: pdb.location(),
            source: pdb.kind(),
            guid: &pdb.id().guid,
            age: pdb.id().age,
            layout,
        }),
    })
}

pub fn run(args: TypesArgs) -> Result<ExitCode> {
    let (source, type_name) = source(&args)?;
    let failed = |error: SymbolError| {
        eprintln!("kdleak: error: {error}");
        Ok(ExitCode::from(error.exit_code() as u8))
    };
    let pdb = match open(source) {
        Ok(pdb) => pdb,
        Err(error) => return failed(error),
    };
    match render(&pdb, &type_name, &args) {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            if let (SymbolError::TypeNotFound { .. }, Ok(table)) = (&error, pdb.types()) {
                let similar = dt::similar_names(&table, &type_name, 8);
                if !similar.is_empty() {
                    eprintln!(
                        "kdleak: names containing `{type_name}`: {}",
                        similar.join(", ")
                    );
                }
            }
            failed(error)
        }
    }
}
