//! `orgmesh.toml`: every setting of a node, with defaults good enough that `orgmesh up` runs with
//! no file at all, and `ORGMESH_*` environment overrides on top. Paths in the file are relative to
//! the file's directory. Never reads anything but the file and the environment.
//!
//! Layout: this file holds [`Config`], its errors, loading and the paths it resolves;
//! `sections` the `[section]` types and their defaults; `env` the `ORGMESH_*` overrides;
//! `validate` the range checks and the security checks a start runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orgmesh_protocol::settings::{GossipSettings, PlacementSettings};

use serde::{Deserialize, Serialize};

mod env;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub use sections::{
    ApiSection, ApiTls, ApiToken, CapacitySection, DiscoverySection, DnsSection, ExecutorSection,
    LimitsSection, NodeSection, P2pSection, PolicySection, TailscaleSection, TasksSection, TrustSection,
};
use validate::check_token;

/// Why a node refuses to start with a configuration that loaded (see [`Config::security`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// A token entry is malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The API's policy cannot be built: a non-loopback API without tokens, or two tokens of one
    /// name.
    #[error(transparent)]
    Api(#[from] orgmesh_api::SecurityError),
    /// The p2p listener is reachable beyond loopback and nothing decides who may connect; the
    /// message names the fixes.
    #[error("{0}")]
    OpenP2p(String),
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or malformed (from the file or an `ORGMESH_*` variable).
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// The key or variable.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Who this node is.
    pub node: NodeSection,
    /// The libp2p side.
    pub p2p: P2pSection,
    /// The local REST API.
    pub api: ApiSection,
    /// What this node offers.
    pub capacity: CapacitySection,
    /// Whose work this node runs.
    pub policy: PolicySection,
    /// Gossip and failure-detection timing.
    pub gossip: GossipSettings,
    /// Placement negotiation timing.
    pub placement: PlacementSettings,
    /// Leases on placed attempts, and graceful stop.
    pub tasks: TasksSection,
    /// How tasks run here.
    pub executor: ExecutorSection,
    /// Who may join and connect.
    pub trust: TrustSection,
    /// Limits on what one peer may ask of this node.
    pub limits: LimitsSection,
    /// Where to find peers besides `p2p.bootstrap`.
    pub discovery: DiscoverySection,
    /// Where the file was loaded from (not a TOML key).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Config {
    /// Loads `path` if given (else defaults with `./orgmesh-data` as data dir), then applies
    /// `ORGMESH_*` overrides from `env`.
    pub fn load(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                let mut config = Config::parse(&text)
                    .map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })?;
                config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                config
            }
            None => {
                let mut config = Config::default();
                config.node.data_dir = PathBuf::from("orgmesh-data");
                config
            }
        };
        config.apply_env(env)?;
        config.read_tokens_file()?;
        config.validate()?;
        Ok(config)
    }

    /// Adds the entries of `api.tokens_file` to `api.tokens`.
    fn read_tokens_file(&mut self) -> Result<(), ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TokensFile {
            #[serde(default)]
            tokens: Vec<ApiToken>,
        }
        let Some(file) = &self.api.tokens_file else { return Ok(()) };
        let path = self.base_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        // Not toml's own message: it quotes the offending line, and a token pasted here in the
        // clear would end up in the log. The line number and a value-free reason are enough.
        let parsed: TokensFile = toml::from_str(&text).map_err(|e| {
            let line =
                e.span().map_or(0, |span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let reason =
                if e.message().contains(['"', '\'']) { "a value of the wrong type" } else { e.message() };
            ConfigError::Parse {
                path: path.clone(),
                message: format!(
                    "line {line}: {reason} (the file holds [[tokens]] entries with name, scopes and sha256)"
                ),
            }
        })?;
        // Checked here as well as by `api_tokens`, so a bad entry is named by its file and
        // position, not as one of `api.tokens` that orgmesh.toml does not contain.
        let key = || format!("api.tokens_file {}", path.display());
        if parsed.tokens.is_empty() {
            // An empty mount (a Secret with the wrong key, a credential never filled in) would
            // otherwise surface as "a public API needs tokens", pointing away from the file.
            return Err(ConfigError::Invalid {
                key: key(),
                message: "the file has no [[tokens]] entries".into(),
            });
        }
        for (i, token) in parsed.tokens.iter().enumerate() {
            check_token(token).map_err(|message| ConfigError::Invalid {
                key: key(),
                message: format!("entry {}: {message}", i + 1),
            })?;
        }
        self.api.tokens.extend(parsed.tokens);
        Ok(())
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Parses and validates TOML text as `up` would, without files or environment (for `init`'s
    /// output checks and the fuzzer).
    pub fn parse_and_validate(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse(text)
            .map_err(|message| ConfigError::Parse { path: PathBuf::from("<text>"), message })?;
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// The data directory, resolved against the config file's directory.
    pub fn data_dir(&self) -> PathBuf {
        self.base_dir.join(&self.node.data_dir)
    }

    /// The node's name.
    pub fn name(&self) -> String {
        self.node.name.clone().unwrap_or_else(|| self.node.org.clone())
    }

    /// The identity key file.
    pub fn identity_path(&self) -> PathBuf {
        self.data_dir().join(&self.p2p.identity_file)
    }

    /// The mesh key file, resolved against the config file's directory.
    pub fn mesh_key_path(&self) -> Option<PathBuf> {
        self.trust.mesh_key_file.as_ref().map(|p| self.base_dir.join(p))
    }

    /// Serializes as TOML (for `orgmesh init`), with the loopback rule explained where it is set.
    pub fn to_toml(&self) -> String {
        let text = toml::to_string_pretty(self).unwrap_or_default();
        let key = format!("open_on_loopback = {}", self.api.open_on_loopback);
        text.replacen(&key, &format!("{LOOPBACK_COMMENT}{key}"), 1)
    }
}

/// What `orgmesh init` writes above `open_on_loopback`.
const LOOPBACK_COMMENT: &str = "\
# Tokenless requests get every scope (as \"anonymous@loopback\") while the API listens on a
# loopback address. Set to false to require a token for everything but /healthz and /readyz.
# A non-loopback API always needs tokens: create one with `orgmesh token create`.
";

/// Parses `K=V` pairs.
pub fn parse_labels(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{p:?} is not KEY=VALUE")),
        })
        .collect()
}

/// CPU and memory of this machine, for capacity defaults.
pub fn machine_resources() -> (u32, u64) {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let mem_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(1024);
    (cpus * 1000, mem_mb)
}
