//! `kdleak symbols manifest|fetch`: the PDBs a pull needs, carried out of an air-gapped lab as a
//! `symchk /om`-style manifest and fetched into a symbol store on a connected machine (README
//! "Air-gapped labs"). The work is `kdleak::needed` and `kdleak::symbols::manifest`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use kdleak::symbols::{manifest, SourceKind, Symbols};

use super::args::{SymbolArgs, TargetArgs};
use super::async_runtime;

#[derive(clap::Args)]
pub struct SymbolsArgs {
    #[command(subcommand)]
    command: SymbolsCommand,
}

#[derive(Subcommand)]
enum SymbolsCommand {
    /// Break in (or open a crash dump given as CONN), list the PDBs a pull needs — the kernel's,
    /// those of the modules its stacks fall in, the verified drivers' — in `symchk /om`'s
    /// manifest format, and resume.
    Manifest(Box<ManifestArgs>),
    /// On a connected machine: fill a symbol store from a manifest (kdleak's or `symchk
    /// /om`'s) through --sympath (`srv*DIR*https://msdl.microsoft.com/download/symbols`).
    Fetch(FetchArgs),
}

#[derive(clap::Args)]
struct ManifestArgs {
    /// CONN (as `kdleak attach` takes it) or a crash dump file.
    #[command(flatten)]
    target: TargetArgs,
    /// Write the manifest to FILE (atomically) instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Only this verified driver (repeatable), as `kdleak attach --driver`.
    #[arg(long = "driver", value_name = "NAME")]
    drivers: Vec<String>,
    /// Do not read the allocate/free log: only the kernel, the callers' modules and the
    /// verified drivers are listed, not the modules deeper stack frames fall in.
    #[arg(long)]
    no_log: bool,
}

#[derive(clap::Args)]
struct FetchArgs {
    /// The manifest (`kdleak symbols manifest --out`, or `symchk /om`).
    manifest: PathBuf,
    #[command(flatten)]
    symbols: SymbolArgs,
}

pub fn run(args: SymbolsArgs) -> Result<ExitCode> {
    match args.command {
        SymbolsCommand::Manifest(args) => run_manifest(*args),
        SymbolsCommand::Fetch(args) => run_fetch(args),
    }
}

fn run_manifest(args: ManifestArgs) -> Result<ExitCode> {
    let pull = kdleak::verifier::PullOptions {
        bug_check: None,
        images: Vec::new(),
        drivers: args.drivers.clone(),
        no_log: args.no_log,
        history_limit: 1,
        connection: String::new(),
        until_stacks: true,
        progress: true,
        processors: 0,
    };
    let runtime = async_runtime()?;
    let dump = PathBuf::from(&args.target.conn);
    let needed = if dump.is_file() {
        let symbols = args.target.symbols.options()?;
        match runtime.block_on(kdleak::needed::dump(&dump, Some(&symbols), &pull)) {
            Ok(needed) => needed,
            Err(error) => {
                eprintln!("kdleak: error: {}: {error}", dump.display());
                return Ok(ExitCode::from(error.exit_code()));
            }
        }
    } else {
        let (spec, options) = args.target.stop_options()?;
        match runtime.block_on(kdleak::needed::live(&spec, &options, &pull)) {
            Ok(needed) => needed,
            Err(error) => {
                eprintln!("kdleak: error: {error}");
                return Ok(ExitCode::from(error.exit_code()));
            }
        }
    };
    let text = manifest::render(&needed.ids());
    match &args.out {
        Some(path) => kdleak::atomic_file::write_atomically(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    for note in &needed.notes {
        eprintln!("kdleak: {note}");
    }
    let describe = |found: Option<SourceKind>| match found {
        Some(SourceKind::Pdb) => "its PDB is here",
        Some(SourceKind::Isf) => "an ISF pack stands in for its PDB here",
        Some(SourceKind::None) | None => "missing here",
    };
    for pdb in &needed.pdbs {
        eprintln!(
            "kdleak: {}: {}",
            manifest::line(&pdb.id),
            describe(pdb.found)
        );
    }
    let destination = args
        .out
        .as_deref()
        .map_or("standard output".to_string(), |p| p.display().to_string());
    eprintln!(
        "kdleak: {} PDBs listed on {destination}; on a connected machine: kdleak symbols fetch \
         MANIFEST --sympath 'srv*DIR*https://msdl.microsoft.com/download/symbols' (or symchk \
         /im MANIFEST /s srv*DIR*https://msdl.microsoft.com/download/symbols)",
        needed.pdbs.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn read_manifest(path: &Path) -> Result<Vec<kdleak::symbols::PdbId>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the manifest {}", path.display()))?;
    Ok(manifest::parse(path, &text)?)
}

fn run_fetch(args: FetchArgs) -> Result<ExitCode> {
    let ids = read_manifest(&args.manifest)?;
    let options = args.symbols.options()?;
    anyhow::ensure!(
        !options.path.elements.is_empty(),
        "no symbol path to fetch into: give --sympath 'srv*DIR*URL' (or set _NT_SYMBOL_PATH)"
    );
    let symbols = Symbols::new(options);
    let fetched = manifest::fetch(&symbols, &ids);
    let mut failed = 0;
    for item in &fetched {
        match &item.result {
            Ok(path) => println!("{}: {}", manifest::line(&item.id), path.display()),
            Err(error) => {
                failed += 1;
                println!("{}: not fetched: {error}", manifest::line(&item.id));
            }
        }
    }
    eprintln!(
        "kdleak: {} of {} PDBs in the store ({} HTTP requests)",
        fetched.len() - failed,
        fetched.len(),
        symbols.http_requests()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}
