//! Unit tests of the command line: parsing, completions, exit codes, where a token comes from,
//! and appending a token entry to a config. Never talks to a node or reads the real environment.

use serde_json::json;

use super::client::ClientError;
use super::remote::{task_exit_code, token_from};
use super::setup::{append_token, token_snippet};
use super::*;
use crate::config::Config;

#[test]
fn the_token_comes_from_a_flag_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drain-token");
    std::fs::write(&file, "om_from-file\n").unwrap();
    let file_s = file.display().to_string();
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    let none = |_: &str| None;
    assert_eq!(token_from(None, None, none), Ok(None));
    assert_eq!(token_from(Some("om_flag"), None, none), Ok(Some("om_flag".into())));
    assert_eq!(token_from(None, Some(&file), none), Ok(Some("om_from-file".into())), "newline dropped");
    // A flag beats either variable, and the file variable beats the token variable.
    let env_file = file_s.clone();
    let both = move |k: &str| match k {
        "ORGMESH_TOKEN_FILE" => Some(env_file.clone()),
        "ORGMESH_TOKEN" => Some("om_env".to_string()),
        _ => None,
    };
    assert_eq!(token_from(Some("om_flag"), None, &both), Ok(Some("om_flag".into())));
    assert_eq!(token_from(None, None, &both), Ok(Some("om_from-file".into())));
    assert_eq!(token_from(None, None, vars(&[("ORGMESH_TOKEN", "om_env")])), Ok(Some("om_env".into())));
    let other = dir.path().join("other");
    std::fs::write(&other, "om_other").unwrap();
    assert_eq!(token_from(None, Some(&other), &both), Ok(Some("om_other".into())));

    // Hostile or broken files say which file, and never fall back to no token.
    let missing = dir.path().join("missing");
    let err = token_from(None, Some(&missing), &both).unwrap_err();
    assert!(err.contains("missing") && err.contains("--token-file"), "{err}");
    std::fs::write(&other, " \n\t").unwrap();
    let err = token_from(None, Some(&other), none).unwrap_err();
    assert!(err.contains("empty"), "{err}");
    std::fs::write(&other, "[[tokens]]\nname = \"drain\"\n").unwrap();
    let err = token_from(None, Some(&other), none).unwrap_err();
    assert!(err.contains("only the token"), "{err}");
    std::fs::write(&other, "om_a\r\nom_b").unwrap();
    assert!(token_from(None, Some(&other), none).is_err(), "no header injection through the file");
}

#[test]
fn token_flags_conflict_only_with_each_other() {
    // Variables are not flags: parsing never fails because ORGMESH_TOKEN is exported.
    let cli = Cli::try_parse_from(["orgmesh", "--token-file", "/f", "status"]).unwrap();
    assert_eq!(cli.token_file.as_deref(), Some(std::path::Path::new("/f")));
    assert!(Cli::try_parse_from(["orgmesh", "--token", "t", "--token-file", "/f", "status"]).is_err());
}

#[test]
fn completions_generate_for_each_shell() {
    for (shell, marker) in [
        (clap_complete::Shell::Bash, "complete -F"),
        (clap_complete::Shell::Zsh, "#compdef orgmesh"),
        (clap_complete::Shell::Fish, "complete -c orgmesh"),
    ] {
        let mut out = Vec::new();
        completions(shell, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(marker), "{shell}: no {marker:?}");
        for sub in ["submit", "logs", "completions"] {
            assert!(text.contains(sub), "{shell}: no {sub}");
        }
    }
}

#[test]
fn cli_parses_and_documents_exit_codes() {
    Cli::command().debug_assert();
    let help = Cli::command().render_help().to_string();
    assert!(help.contains("3    the node is not reachable"), "{help}");
    let cli = Cli::try_parse_from(["orgmesh", "completions", "zsh"]).unwrap();
    assert!(matches!(cli.command, Command::Completions { shell: clap_complete::Shell::Zsh }));
    assert!(Cli::try_parse_from(["orgmesh", "completions", "tcsh"]).is_err());
}

#[test]
fn submit_wait_exit_codes() {
    assert_eq!(task_exit_code(&json!({"status": "succeeded", "exit_code": 0})), 0);
    assert_eq!(task_exit_code(&json!({"status": "failed", "exit_code": 7})), 7);
    assert_eq!(task_exit_code(&json!({"status": "failed", "exit_code": null})), 1);
    assert_eq!(task_exit_code(&json!({"status": "cancelled", "exit_code": null})), 130);
}

#[test]
fn unreachable_error_names_the_address_and_how_to_start_a_node() {
    let e =
        ClientError::Unreachable { url: "http://127.0.0.1:7070".into(), reason: "Connection refused".into() };
    let text = e.to_string();
    assert!(text.contains("http://127.0.0.1:7070") && text.contains("Connection refused"), "{text}");
    assert!(text.contains("orgmesh up") && text.contains("--api"), "{text}");
    assert_eq!(e.exit_code(), 3);
}

#[test]
fn a_created_token_appends_to_an_init_config_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orgmesh.toml");
    std::fs::write(&path, Config::default().to_toml()).unwrap();
    let token = orgmesh_api::auth::generate_token().unwrap();
    let sha256 = orgmesh_api::auth::to_hex(&orgmesh_api::auth::hash_token(&token));
    let entry =
        crate::config::ApiToken { name: "ci".into(), scopes: vec!["read".into(), "submit".into()], sha256 };
    append_token(&path, &entry, &token_snippet(&entry)).unwrap();
    let config = Config::load(Some(&path), |_| None).unwrap();
    let tokens = config.api_tokens().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].sha256, orgmesh_api::auth::hash_token(&token));
    // A second token of the same name is refused and leaves the file as it was.
    let before = std::fs::read_to_string(&path).unwrap();
    assert!(append_token(&path, &entry, &token_snippet(&entry)).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    // The token itself is in neither the file nor the snippet.
    assert!(!before.contains(&token));
}
