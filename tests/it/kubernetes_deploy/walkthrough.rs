//! The docs/deployment.md walkthrough, run with cluster-only commands (`kubectl apply`, `docker`)
//! replaced by shims that check their arguments.

use super::*;

/// The docs/deployment.md walkthrough, run in a scratch copy of the repository. Commands that
/// need no cluster run for real; `kubectl apply -k` renders the overlay instead, `kubectl
/// create` runs with `--dry-run=client`, and commands that need a cluster or a registry
/// (`kubectl apply -f -`, `label`, `rollout`, `docker`) are recorded after their file or
/// directory arguments are checked.
#[test]
fn deployment_walkthrough_runs() {
    let doc = std::fs::read_to_string(manifest_dir().join("docs/deployment.md")).unwrap();
    let section = doc
        .split_once("<!-- walkthrough:start -->")
        .and_then(|(_, rest)| rest.split_once("<!-- walkthrough:end -->"))
        .map(|(section, _)| section)
        .expect("docs/deployment.md has a walkthrough section");
    let blocks: Vec<&str> = section
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(code, _)| code))
        .collect();
    assert!(blocks.len() >= 5, "walkthrough blocks: {blocks:?}");

    let dir = TempDir::new("walkthrough");
    let repo = dir.path().join("repo");
    for part in ["deploy", "policies"] {
        copy_dir(&manifest_dir().join(part), &repo.join(part));
    }
    std::fs::copy(manifest_dir().join("Dockerfile"), repo.join("Dockerfile")).unwrap();
    let _ = std::fs::remove_dir_all(repo.join("deploy/kubernetes/overlays/dev/secrets"));
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.path().join("cluster-commands.log");
    shim(&bin, "kubectl", KUBECTL_SHIM);
    shim(&bin, "docker", DOCKER_SHIM);
    shim(&bin, "stepguard", "exec \"$STEPGUARD_BIN\" \"$@\"\n");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&repo)
        .env("PATH", path)
        .env("REAL_KUBECTL", kubectl())
        .env("STEPGUARD_BIN", env!("CARGO_BIN_EXE_stepguard"))
        .env("SHIM_LOG", &log)
        .env_remove("STEPGUARD_CLIENT_SECRET")
        .output()
        .unwrap();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        output.status.success(),
        "the walkthrough failed:\n--- script ---\n{script}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- cluster commands ---\n{logged}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    // What it left behind: the rendered overlays, the public evidence key, no secrets.
    let ha = std::fs::read_to_string(repo.join("stepguard-ha.yaml")).unwrap();
    assert!(ha_problems(&yaml_documents(&ha)).is_empty());
    assert!(repo.join("stepguard-dev.yaml").is_file());
    assert!(repo.join("evidence-signing.pub").is_file());
    for secret in ["k1", "signing.pem", "client-secret"] {
        assert!(
            !repo.join(secret).exists(),
            "the walkthrough leaves {secret} behind"
        );
    }
    for expected in [
        "apply -k deploy/kubernetes/overlays/ha",
        "label namespace payments",
        "rollout status",
        "docker build",
    ] {
        assert!(
            logged.contains(expected),
            "{expected:?} not reached:\n{logged}"
        );
    }
}

fn shim(bin: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = bin.join(name);
    std::fs::write(
        &path,
        format!("#!/usr/bin/env bash\nset -euo pipefail\n{body}"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

const KUBECTL_SHIM: &str = r#"
record() { echo "$*" >> "$SHIM_LOG"; }
args=("$@")
verb=""
skip=0
for a in "$@"; do
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  case "$a" in -n|--namespace) skip=1 ;; -*) ;; *) verb="$a"; break ;; esac
done
case "$verb" in
  kustomize) exec "$REAL_KUBECTL" "$@" ;;
  create) exec "$REAL_KUBECTL" "$@" --dry-run=client -o yaml ;;
  apply)
    for ((i = 0; i < ${#args[@]}; i++)); do
      if [ "${args[$i]}" = "-k" ]; then "$REAL_KUBECTL" kustomize "${args[$((i + 1))]}" > /dev/null; fi
      if [ "${args[$i]}" = "-f" ] && [ "${args[$((i + 1))]}" = "-" ]; then cat > /dev/null; fi
    done
    record "$@" ;;
  label|rollout|get|wait) record "$@" ;;
  *) echo "kubectl shim: not expected in the walkthrough: $*" >&2; exit 1 ;;
esac
"#;

const DOCKER_SHIM: &str = r#"
case "$1" in
  build) [ -f Dockerfile ] || { echo "docker shim: no Dockerfile in $PWD" >&2; exit 1; } ;;
  push) ;;
  *) echo "docker shim: not expected: $*" >&2; exit 1 ;;
esac
echo "docker $*" >> "$SHIM_LOG"
"#;
