//! The symbol layer's errors. Every variant names the PDB (or the module/key searched for) and,
//! where it applies, the type, field or symbol that failed.

use std::path::PathBuf;

/// Why a symbol, type or PDB could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    #[error("{pdb}: cannot read {what}: {source}")]
    Pdb {
        pdb: PathBuf,
        what: &'static str,
        #[source]
        source: pdb2::Error,
    },
    #[error("{pdb}: not a usable PDB: {reason}")]
    Malformed { pdb: PathBuf, reason: String },
    /// `name` is already made printable (control characters escaped, cut short).
    #[error("PDB name `{name}` (from the target's memory) refused: {reason}")]
    UnsafeName { name: String, reason: String },
    #[error("{pdb}: no type `{type_name}`")]
    TypeNotFound { pdb: PathBuf, type_name: String },
    #[error("{pdb}: type `{type_name}` has no field `{field}`")]
    FieldNotFound {
        pdb: PathBuf,
        type_name: String,
        field: String,
    },
    #[error("{pdb}: `{type_name}.{field}` is {found}, not a structure or union, so it has no field `{next}`")]
    NotARecord {
        pdb: PathBuf,
        type_name: String,
        field: String,
        found: String,
        next: String,
    },
    #[error("{pdb}: no public or global symbol `{name}`")]
    SymbolNotFound { pdb: PathBuf, name: String },
    #[error("{pdb}: type record {index:#x} is malformed: {reason}")]
    BadType {
        pdb: PathBuf,
        index: u32,
        reason: String,
    },
    #[error(
        "{pdb}: wrong PDB for this module: the module's RSDS record asks for {expected}, the file is {found} (use --force-symbols to use it anyway)"
    )]
    Mismatch {
        pdb: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{name} {key}: not found in the symbol path ({})", tried.join("; "))]
    NotFound {
        name: String,
        key: String,
        tried: Vec<String>,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable CAB-compressed PDB: {reason}")]
    Cab { path: PathBuf, reason: String },
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("symbol path element `{element}`: {reason}")]
    BadSymbolPath { element: String, reason: String },
    /// An ISF symbol table (Volatility 3's format) that cannot be used.
    #[error("{location}: not a usable ISF symbol table: {reason}")]
    Isf { location: String, reason: String },
    /// No ISF symbol pack holds the module's table.
    #[error(
        "no ISF symbol pack has {name}/{file}.json, .json.xz or .json.gz ({})",
        looked_in(looked)
    )]
    IsfNotFound {
        name: String,
        /// `GUID-AGE`, Volatility's file name for the table.
        file: String,
        looked: Vec<String>,
    },
    /// Neither the symbol path nor an ISF symbol pack had the module's symbols.
    #[error("{pdb}; and {isf}")]
    NoSymbols {
        pdb: Box<SymbolError>,
        isf: Box<SymbolError>,
    },
    /// A symbol manifest (`kdleak symbols manifest`, `symchk /om`) line that cannot be read.
    #[error("{path}:{line}: {reason}")]
    BadManifest {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

fn looked_in(looked: &[String]) -> String {
    if looked.is_empty() {
        "no pack given with --isf DIR|ZIP, and none in Volatility 3's symbol directories".into()
    } else {
        format!("looked in {}", looked.join("; "))
    }
}

impl SymbolError {
    /// The process exit code (README "Exit codes"): 2 for a malformed symbol path, 4 otherwise
    /// (target data or symbols this host cannot use).
    pub fn exit_code(&self) -> i32 {
        match self {
            SymbolError::BadSymbolPath { .. } | SymbolError::BadManifest { .. } => 2,
            _ => 4,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SymbolError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = SymbolError> = std::result::Result<T, E>;
