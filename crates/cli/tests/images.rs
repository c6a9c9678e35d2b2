//! The berth image commands end to end, against Debian's docker-registry on loopback, with
//! test images built from busybox-static and pushed with skopeo. Each test has its own temp
//! root, registry and proxy; all are stopped by pid and removed when the test ends.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use berth_testkit::check::{poll_until, wait_until};
use berth_testkit::host::xattr;
use berth_testkit::image::{build_fixtures, compress, Fixtures};
use berth_testkit::registry::{put_manifest, skopeo, skopeo_push, AfterBudget, Proxy, Registry};
use serde_json::Value;

struct Env {
    tmp: tempfile::TempDir,
    registry: Registry,
    fx: Fixtures,
}

impl Env {
    fn new() -> Env {
        Env::with_auth(None)
    }

    fn with_auth(auth: Option<(&str, &str)>) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let registry = Registry::start(&tmp.path().join("registry"), auth).expect("start docker-registry");
        let fx = build_fixtures(&tmp.path().join("fixtures")).expect("build fixtures");
        let env = Env { tmp, registry, fx };
        env.write_config("");
        env
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    fn config(&self) -> PathBuf {
        self.tmp.path().join("berth.toml")
    }

    fn write_config(&self, registries_extra: &str) {
        let retries = if registries_extra.contains("retries") { "" } else { "retries = 2\n" };
        fs::write(self.config(), format!("[registries]\n{retries}{registries_extra}")).unwrap();
    }

    fn push(&self, tag: &str, repo: &str) -> String {
        let dest = format!("{}/{repo}", self.registry.addr());
        skopeo_push(&self.fx.layout, tag, &dest, tag == "multiarch", None, None).expect("skopeo push");
        dest
    }

    fn cmd(&self, root: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.arg("--root").arg(root).arg("--config").arg(self.config()).args(args);
        c.env("REGISTRY_AUTH_FILE", self.tmp.path().join("auth.json")).env_remove("BERTH_ROOT");
        c.stdin(Stdio::null());
        c
    }

    fn run_in(&self, root: &Path, args: &[&str]) -> Output {
        self.cmd(root, args).output().expect("run berth")
    }

    fn ok_in(&self, root: &Path, args: &[&str]) -> (String, String) {
        let o = self.run_in(root, args);
        let (out, err) =
            (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
        assert!(o.status.success(), "berth {args:?} failed:\nstdout: {out}\nstderr: {err}");
        (out, err)
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        self.ok_in(&self.root(), args)
    }

    fn fail(&self, args: &[&str]) -> String {
        let o = self.run_in(&self.root(), args);
        assert!(!o.status.success(), "berth {args:?} succeeded but should have failed");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn inspect_in(&self, root: &Path, name: &str) -> Value {
        let (out, _) = self.ok_in(root, &["image", "inspect", name]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    fn images_json(&self, root: &Path) -> Vec<Value> {
        let (out, _) = self.ok_in(root, &["images", "--format", "json"]);
        serde_json::from_str::<Vec<Value>>(&out).unwrap()
    }
}

fn layer_dir(root: &Path, chain: &str) -> PathBuf {
    root.join("layers").join(chain.trim_start_matches("sha256:"))
}

fn dir_entries(p: &Path) -> Vec<String> {
    match fs::read_dir(p) {
        Ok(rd) => {
            let mut v: Vec<String> = rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

#[test]
fn cli_pull_multilayer_then_list_inspect_tag_rmi_prune_df() {
    let env = Env::new();
    let repo = env.push("multi", "test/multi:v1");
    let (out, err) = env.ok(&["pull", &repo]);
    assert_eq!(out.trim(), env.fx.multi.config_digest, "pull prints the image ID");
    assert!(err.contains("pulled"), "{err}");

    let img = env.inspect_in(&env.root(), &repo);
    assert_eq!(img["Id"], env.fx.multi.config_digest.as_str());
    assert_eq!(img["Digest"], env.fx.multi.manifest_descriptor["digest"]);
    assert_eq!(img["RepoTags"][0], format!("{repo}"));
    assert_eq!(img["Config"]["User"], "user");
    // Size is the unpacked content (busybox alone is over a megabyte), larger than compressed.
    assert!(
        img["Size"].as_u64().unwrap() > 1_000_000 && img["Size"].as_u64() > img["CompressedSize"].as_u64(),
        "{img}"
    );
    let layers = img["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert_eq!(layers[2]["MediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
    let (l1, l2, l3) = (
        layer_dir(&env.root(), layers[0]["ChainID"].as_str().unwrap()),
        layer_dir(&env.root(), layers[1]["ChainID"].as_str().unwrap()),
        layer_dir(&env.root(), layers[2]["ChainID"].as_str().unwrap()),
    );
    // Layer 1: hardlinks share an inode, symlinks are kept, busybox runs.
    let h1 = fs::metadata(l1.join("data/hard1")).unwrap();
    assert_eq!(h1.ino(), fs::metadata(l1.join("data/hard2")).unwrap().ino());
    assert_eq!(h1.mode() & 0o7777, 0o600);
    assert_eq!(fs::read_link(l1.join("data/link")).unwrap(), Path::new("hard1"));
    assert_eq!(fs::read_link(l1.join("bin/sh")).unwrap(), Path::new("/bin/busybox"));
    // Layer 2: OCI whiteouts became overlayfs whiteouts.
    for wh in ["etc/shadowed", "opt/old"] {
        let m = fs::symlink_metadata(l2.join(wh)).unwrap();
        assert!(m.file_type().is_char_device() && m.rdev() == 0, "{wh} is not a whiteout");
    }
    assert_eq!(xattr(&l2.join("var/cache"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(dir_entries(&l2.join("var/cache")), vec!["c"]);
    // Layer 3: zstd.
    assert_eq!(fs::read_to_string(l3.join("zstd/hello")).unwrap(), "hello from a zstd layer\n");

    // A second pull fetches nothing.
    let (_, err) = env.ok(&["pull", &repo]);
    assert_eq!(err.matches("already exists").count(), 3, "{err}");

    let (table, _) = env.ok(&["images"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(table.contains(&format!("{}/test/multi", env.registry.addr())) && table.contains("v1"), "{table}");
    assert!(table.contains(&env.fx.multi.config_digest[7..19]), "{table}");

    env.ok(&["tag", &repo, "localhost/renamed:latest"]);
    let names: Vec<String> = env.images_json(&env.root())[0]["RepoTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec![repo.clone(), "localhost/renamed:latest".to_string()]);
    let err = env.fail(&["rmi", &env.fx.multi.config_digest[7..19]]);
    assert!(err.contains("2 tags"), "{err}");
    let (out, _) = env.ok(&["rmi", "localhost/renamed"]);
    assert!(out.contains("Untagged: localhost/renamed:latest") && !out.contains("Deleted"), "{out}");

    let (df, _) = env.ok(&["system", "df", "--format", "json"]);
    let df: Value = serde_json::from_str(&df).unwrap();
    assert_eq!((df["images"].as_u64(), df["layers"].as_u64(), df["blobs"].as_u64()), (Some(1), Some(3), Some(5)));
    assert_eq!(df["blob_reclaimable"], 0);

    let (out, _) = env.ok(&["rmi", &repo]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert!(env.images_json(&env.root()).is_empty());
    assert!(dir_entries(&env.root().join("layers")).is_empty(), "layers left after rmi");
    assert!(dir_entries(&env.root().join("content/blobs/sha256")).is_empty(), "blobs left after rmi");
    let err = env.fail(&["rmi", &repo]);
    assert!(err.contains("not found"), "{err}");

    // prune: untagged images only, then --all.
    env.ok(&["pull", &repo]);
    env.ok(&["tag", &repo, "localhost/keep:1"]);
    env.ok(&["rmi", &repo]);
    let (out, _) = env.ok(&["image", "prune"]);
    assert!(out.contains("Removed 0 image(s)"), "{out}");
    let (out, _) = env.ok(&["image", "prune", "--all"]);
    assert!(out.contains("Removed 1 image(s)"), "{out}");
    let (df, _) = env.ok(&["system", "df", "--format", "json"]);
    let df: Value = serde_json::from_str(&df).unwrap();
    assert_eq!((df["images"].as_u64(), df["layers"].as_u64(), df["blobs"].as_u64()), (Some(0), Some(0), Some(0)));
}

#[test]
fn cli_pull_docker_schema2_image() {
    let env = Env::new();
    let dest = format!("{}/test/docker:v2s2", env.registry.addr());
    skopeo_push(&env.fx.layout, "simple", &dest, false, Some("v2s2"), None).unwrap();
    env.ok(&["pull", "-q", &dest]);
    let img = env.inspect_in(&env.root(), &dest);
    assert_eq!(img["MediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(img["Layers"][0]["MediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
    assert_eq!(img["RootFS"]["Layers"][0], env.fx.simple.diff_ids[0].as_str());
}

#[test]
fn cli_pull_multiarch_index_selects_platform() {
    let env = Env::new();
    let repo = env.push("multiarch", "test/multiarch:v1");
    env.ok(&["pull", &repo]);
    let img = env.inspect_in(&env.root(), &repo);
    assert_eq!(img["Architecture"], "amd64");
    assert_eq!(img["Digest"], env.fx.simple.manifest_descriptor["digest"]);
    assert_eq!(
        img["RepoDigests"][0],
        format!("{}/test/multiarch@{}", env.registry.addr(), env.fx.index["digest"].as_str().unwrap())
    );
    env.ok(&["pull", "--platform", "linux/arm64", &repo]);
    let img = env.inspect_in(&env.root(), &repo);
    assert_eq!(img["Architecture"], "arm64");
    assert_eq!(img["Id"], env.fx.arm.config_digest.as_str());
    let err = env.fail(&["pull", "--platform", "linux/s390x", &repo]);
    assert!(err.contains("no image for platform linux/s390x") && err.contains("linux/arm64/v8"), "{err}");
    let err = env.fail(&["pull", "--platform", "bogus", &repo]);
    assert!(err.contains("invalid platform"), "{err}");
    // The same index as a Docker manifest list.
    let list = format!("{}/test/list:v1", env.registry.addr());
    skopeo_push(&env.fx.layout, "multiarch", &list, true, Some("v2s2"), None).unwrap();
    let raw: Value = serde_json::from_str(
        &skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{list}")]).unwrap(),
    )
    .unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json");
    env.ok(&["pull", "-q", "--platform", "linux/arm64", &list]);
    let img = env.inspect_in(&env.root(), &list);
    assert_eq!(img["Architecture"], "arm64");
    assert_eq!(img["MediaType"], "application/vnd.docker.distribution.manifest.v2+json");
}

/// An index over `entries` (descriptors), as bytes and as a descriptor for linux/amd64.
fn index_doc(entries: &[Value]) -> (Vec<u8>, Value) {
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": format!("sha256:{}", berth_testkit::image::sha256_hex(&bytes)),
        "size": bytes.len(),
        "platform": {"architecture": "amd64", "os": "linux"},
    });
    (bytes, desc)
}

#[test]
fn cli_pull_and_load_follow_nested_indexes() {
    // The image-spec says implementations SHOULD support an index listing indexes: it used to
    // fail with "no image for platform linux/amd64 (available: linux/amd64)".
    let env = Env::new();
    let addr = env.registry.addr();
    env.push("simple", "test/nested:simple");
    let put = |reference: &str, bytes: &[u8]| {
        put_manifest(&addr, "test/nested", reference, bytes, "application/vnd.oci.image.index.v1+json").unwrap()
    };
    // simple inside an index of its own, inside the top index (tagged v1).
    let (inner, inner_desc) = index_doc(std::slice::from_ref(&env.fx.simple.manifest_descriptor));
    put(inner_desc["digest"].as_str().unwrap(), &inner);
    let (top, top_desc) = index_doc(std::slice::from_ref(&inner_desc));
    put("v1", &top);
    let repo = format!("{addr}/test/nested:v1");
    let (out, _) = env.ok(&["pull", &repo]);
    assert_eq!(out.trim(), env.fx.simple.config_digest);
    let img = env.inspect_in(&env.root(), &repo);
    assert_eq!(img["Digest"], env.fx.simple.manifest_descriptor["digest"]);
    assert_eq!(img["RepoDigests"][0], format!("{addr}/test/nested@{}", top_desc["digest"].as_str().unwrap()));
    // Deeper than the limit: refused, saying so.
    let (mut bytes, mut desc) = (inner, inner_desc);
    for _ in 0..9 {
        (bytes, desc) = index_doc(&[desc]);
        put(desc["digest"].as_str().unwrap(), &bytes);
    }
    put("deep", &bytes);
    let err = env.fail(&["pull", &format!("{addr}/test/nested:deep")]);
    assert!(err.contains("indexes nested more than 8 deep: sha256:"), "{err}");

    // berth load of an OCI layout whose index.json lists an index of an index.
    let dir = env.tmp.path().join("nested-layout");
    let mut layout = berth_testkit::image::OciLayout::create(&dir).unwrap();
    let mut b = berth_testkit::image::LayerBuilder::new();
    b.file("nested", 0o644, b"found through two indexes\n");
    let l = berth_testkit::image::Layer { tar: b.finish(), compression: berth_testkit::image::Compression::Gzip };
    let info = layout.image(&[l], serde_json::json!({"Cmd": ["/bin/sh"]}), "amd64").unwrap();
    let mut inner = layout.index(std::slice::from_ref(&info.manifest_descriptor)).unwrap();
    inner["platform"] = serde_json::json!({"architecture": "amd64", "os": "linux"});
    let outer = layout.index(&[inner]).unwrap();
    layout.tag("localhost/nested:1", &outer).unwrap();
    let root = env.tmp.path().join("root-load");
    let (out, _) = env.ok_in(&root, &["load", "-i", dir.to_str().unwrap()]);
    assert!(out.contains("localhost/nested:1"), "{out}");
    assert_eq!(env.inspect_in(&root, "localhost/nested:1")["Id"], info.config_digest.as_str());
}

#[test]
fn cli_save_load_round_trips_and_skopeo_reads_them() {
    let env = Env::new();
    let repo = env.push("multi", "test/rt:v1");
    env.ok(&["pull", "-q", &repo]);
    let digest = env.fx.multi.manifest_descriptor["digest"].as_str().unwrap().to_string();
    let id = env.fx.multi.config_digest.clone();
    let t = env.tmp.path();

    // OCI archive and directory: identical manifest digests.
    let oci_tar = t.join("img.oci.tar");
    env.ok(&["save", "--format", "oci-archive", "-o", oci_tar.to_str().unwrap(), &repo]);
    let oci_dir = t.join("img.oci");
    env.ok(&["save", "--format", "oci-dir", "-o", oci_dir.to_str().unwrap(), &repo]);
    for (i, src) in [&oci_tar, &oci_dir].iter().enumerate() {
        let root = t.join(format!("root-oci-{i}"));
        let (out, _) = env.ok_in(&root, &["load", "-q", "-i", src.to_str().unwrap()]);
        assert!(out.contains(&format!("Loaded image: {repo}")), "{out}");
        let img = env.inspect_in(&root, &repo);
        assert_eq!(img["Digest"], digest.as_str());
        assert_eq!(img["Id"], id.as_str());
    }
    let sk: Value =
        serde_json::from_str(&skopeo(&["inspect", &format!("oci-archive:{}", oci_tar.display())]).unwrap()).unwrap();
    assert_eq!(sk["Digest"], digest.as_str());
    let sk: Value =
        serde_json::from_str(&skopeo(&["inspect", &format!("oci:{}", oci_dir.display())]).unwrap()).unwrap();
    assert_eq!(sk["Digest"], digest.as_str());

    // docker-archive: the image ID (config digest) is the identity.
    let dtar = t.join("img.docker.tar");
    env.ok(&["save", "-o", dtar.to_str().unwrap(), &repo]);
    let root = t.join("root-docker");
    env.ok_in(&root, &["load", "-i", dtar.to_str().unwrap()]);
    let img = env.inspect_in(&root, &repo);
    assert_eq!(img["Id"], id.as_str());
    assert_eq!(img["RootFS"]["Layers"], serde_json::json!(env.fx.multi.diff_ids));
    let raw: Value =
        serde_json::from_str(&skopeo(&["inspect", "--raw", &format!("docker-archive:{}", dtar.display())]).unwrap())
            .unwrap();
    assert_eq!(raw["config"]["digest"], id.as_str());

    // A docker-archive written by skopeo loads too.
    let sk_tar = t.join("skopeo.docker.tar");
    skopeo(&[
        "copy",
        "--quiet",
        &format!("oci:{}:simple", env.fx.layout.display()),
        &format!("docker-archive:{}:localhost/from-skopeo:1", sk_tar.display()),
    ])
    .unwrap();
    let root = t.join("root-skopeo");
    let (out, _) = env.ok_in(&root, &["load", "-i", sk_tar.to_str().unwrap()]);
    assert!(out.contains("localhost/from-skopeo:1"), "{out}");
    assert_eq!(env.inspect_in(&root, "localhost/from-skopeo:1")["Id"], env.fx.simple.config_digest.as_str());

    // An OCI layout holding a multi-platform index: the host's image is loaded.
    let idx_dir = t.join("index.oci");
    skopeo(&[
        "copy",
        "--quiet",
        "--all",
        &format!("oci:{}:multiarch", env.fx.layout.display()),
        &format!("oci:{}:multiarch", idx_dir.display()),
    ])
    .unwrap();
    let root = t.join("root-index");
    let (out, _) = env.ok_in(&root, &["load", "-i", idx_dir.to_str().unwrap()]);
    assert!(out.contains(&env.fx.simple.config_digest), "{out}");
    assert_eq!(env.inspect_in(&root, &env.fx.simple.config_digest)["Architecture"], "amd64");

    // Loading what is not an archive fails clearly and leaves nothing.
    let junk = t.join("junk.tar");
    fs::write(&junk, vec![0u8; 2048]).unwrap();
    let o = env.run_in(&t.join("root-junk"), &["load", "-i", junk.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("neither an OCI layout"));
}

#[test]
fn cli_push_then_pull_gives_identical_digests_with_cross_repo_mount() {
    let env = Env::new();
    let repo = env.push("multi", "test/src:v1");
    env.ok(&["pull", "-q", &repo]);
    let dest = format!("{}/test/dst:v2", env.registry.addr());
    let (out, err) = env.ok(&["push", &repo, &dest]);
    let digest = env.fx.multi.manifest_descriptor["digest"].as_str().unwrap();
    assert_eq!(out.trim(), digest);
    assert!(err.contains("4 mounted"), "blobs are mounted from the source repository: {err}");
    let sk: Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &format!("docker://{dest}")]).unwrap())
            .unwrap();
    assert_eq!(sk["Digest"], digest);
    let root = env.tmp.path().join("root2");
    env.ok_in(&root, &["pull", "-q", &dest]);
    assert_eq!(env.inspect_in(&root, &dest)["Digest"], digest);
    // By digest: the same image, recorded with its repository digest and no tag.
    let root3 = env.tmp.path().join("root3");
    let by_digest = format!("{}/test/dst@{digest}", env.registry.addr());
    env.ok_in(&root3, &["pull", "-q", &by_digest]);
    let img = env.inspect_in(&root3, &by_digest);
    assert_eq!(img["RepoDigests"][0], by_digest.as_str());
    assert_eq!(img["RepoTags"], serde_json::json!([]));
    // Pushing again: everything is already there.
    let (_, err) = env.ok(&["push", &repo, &dest]);
    assert!(err.contains("4 already present"), "{err}");
}

#[test]
fn cli_import_rootfs_then_push_upload_and_pull() {
    let env = Env::new();
    let tar = berth_testkit::image::busybox_layer(env.tmp.path()).unwrap();
    let file = env.tmp.path().join("rootfs.tar.gz");
    fs::write(&file, berth_testkit::image::compress(&tar, berth_testkit::image::Compression::Gzip)).unwrap();
    let (out, _) = env.ok(&["import", file.to_str().unwrap(), "localhost/imported:1"]);
    let id = out.trim().to_string();
    let img = env.inspect_in(&env.root(), "localhost/imported:1");
    assert_eq!(img["Id"], id.as_str());
    assert_eq!(img["RootFS"]["Layers"][0], format!("sha256:{}", berth_testkit::image::sha256_hex(&tar)));
    let l = layer_dir(&env.root(), img["Layers"][0]["ChainID"].as_str().unwrap());
    assert!(l.join("bin/busybox").is_file());
    let dest = format!("{}/test/imported:1", env.registry.addr());
    let (_, err) = env.ok(&["push", "localhost/imported:1", &dest]);
    assert!(err.contains("2 uploaded"), "{err}");
    let root = env.tmp.path().join("root2");
    env.ok_in(&root, &["pull", "-q", &dest]);
    assert_eq!(env.inspect_in(&root, &dest)["Digest"], img["Digest"]);
    let err = env.fail(&["import", "/nonexistent/rootfs.tar", "localhost/x:1"]);
    assert!(err.contains("/nonexistent/rootfs.tar"), "{err}");
}

#[test]
fn cli_login_logout_with_basic_auth_registry() {
    let env = Env::with_auth(Some(("berth", "s3cret")));
    let dest = format!("{}/test/auth:v1", env.registry.addr());
    skopeo_push(&env.fx.layout, "simple", &dest, false, None, Some("berth:s3cret")).unwrap();
    let auth = env.tmp.path().join("auth.json");
    let err = env.fail(&["pull", &dest]);
    assert!(err.contains("401") && err.contains("berth login"), "{err}");
    let err = env.fail(&["login", "-u", "berth", "-p", "wrong", &env.registry.addr()]);
    assert!(err.contains("login to") && err.contains("401"), "{err}");
    assert!(!auth.exists(), "a failed login must not store credentials");
    let (out, _) = env.ok(&["login", "-u", "berth", "-p", "s3cret", &env.registry.addr()]);
    assert!(out.contains("Login Succeeded"), "{out}");
    let saved: Value = serde_json::from_slice(&fs::read(&auth).unwrap()).unwrap();
    assert!(saved["auths"][env.registry.addr()]["auth"].is_string());
    assert_eq!(fs::metadata(&auth).unwrap().mode() & 0o777, 0o600);
    env.ok(&["pull", "-q", &dest]);
    let dest2 = format!("{}/test/auth2:v1", env.registry.addr());
    env.ok(&["push", &dest, &dest2]);
    env.ok(&["logout", &env.registry.addr()]);
    let saved: Value = serde_json::from_slice(&fs::read(&auth).unwrap()).unwrap();
    assert!(saved["auths"].get(env.registry.addr()).is_none());
    let err = env.fail(&["logout", &env.registry.addr()]);
    assert!(err.contains("not logged in"), "{err}");
    let root = env.tmp.path().join("root2");
    let o = env.run_in(&root, &["pull", &dest]);
    assert!(!o.status.success(), "pull without credentials must fail");
    env.ok_in(&root, &["pull", "-q", "--creds", "berth:s3cret", &dest]);
    let err = env.fail(&["pull", "--creds", "nocolon", &dest]);
    assert!(err.contains("USER:PASSWORD"), "{err}");
}

#[test]
fn cli_bearer_token_flow_through_token_server() {
    let env = Env::new();
    env.push("simple", "test/tok:v1");
    let proxy = Proxy::start(env.registry.port).unwrap();
    proxy.require_bearer("berth-test-registry", "tokuser", "tokpass");
    let src = format!("{}/test/tok:v1", proxy.addr());
    env.ok(&["pull", "-q", &src]);
    let treqs = proxy.token_requests();
    assert!(!treqs.is_empty(), "no token was requested");
    assert!(
        treqs[0].contains("service=berth-test-registry") && treqs[0].contains("scope=repository%3Atest%2Ftok%3Apull"),
        "{treqs:?}"
    );
    // Only the first request of each kind is challenged: the token is reused.
    let challenged = proxy.requests().iter().filter(|r| !r.contains("Authorization: Bearer")).count();
    assert!(challenged <= 3, "token not reused: {:#?}", proxy.requests());

    let dest = format!("{}/test/tok-pushed:v1", proxy.addr());
    let err = env.fail(&["push", &src, &dest]);
    assert!(err.contains("token request") && err.contains("401"), "{err}");
    let err = env.fail(&["login", "-u", "tokuser", "-p", "nope", &proxy.addr()]);
    assert!(err.contains("401"), "{err}");
    env.ok(&["login", "-u", "tokuser", "-p", "tokpass", &proxy.addr()]);
    env.ok(&["push", &src, &dest]);
    assert!(proxy.token_requests().iter().any(|t| t.contains("pull%2Cpush") && t.ends_with("basic=true")));
    let sk: Value = serde_json::from_str(
        &skopeo(&["inspect", "--tls-verify=false", &format!("docker://{}/test/tok-pushed:v1", env.registry.addr())])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(sk["Digest"], env.fx.simple.manifest_descriptor["digest"]);
}

/// A store with no image records, no committed layer for `chain`, and only consistent data.
fn assert_consistent_empty(env: &Env, root: &Path) {
    assert!(env.images_json(root).is_empty(), "an image was recorded by a failed pull");
    let (df, _) = env.ok_in(root, &["system", "df", "--format", "json"]);
    let df: Value = serde_json::from_str(&df).unwrap();
    assert_eq!(df["images"], 0);
}

fn big_image_env() -> (Env, Proxy, String) {
    let env = Env::new();
    // A layer large enough to interrupt: 8 MB of filler (about 3 MB compressed).
    let dir = env.tmp.path().join("big");
    let mut layout = berth_testkit::image::OciLayout::create(&dir).unwrap();
    let mut b = berth_testkit::image::LayerBuilder::new();
    b.file("big", 0o644, &berth_testkit::image::filler(7, 8_000_000));
    let l = berth_testkit::image::Layer { tar: b.finish(), compression: berth_testkit::image::Compression::Gzip };
    let info = layout.image(&[l], serde_json::json!({"Cmd": ["/bin/sh"]}), "amd64").unwrap();
    layout.tag("big", &info.manifest_descriptor).unwrap();
    skopeo_push(&dir, "big", &format!("{}/test/big:v1", env.registry.addr()), false, None, None).unwrap();
    let proxy = Proxy::start(env.registry.port).unwrap();
    let src = format!("{}/test/big:v1", proxy.addr());
    (env, proxy, src)
}

#[test]
fn cli_stalled_download_times_out_then_resumes() {
    let (env, proxy, src) = big_image_env();
    env.write_config("retries = 1\nstall-timeout = 1\n");
    proxy.limit_blob_bytes(200_000, AfterBudget::Stall);
    let err = env.fail(&["pull", &src]);
    assert!(err.contains("stalled: no data for 1s") && err.contains("download of blob sha256:"), "{err}");
    assert_consistent_empty(&env, &env.root());
    let ingest = env.root().join("content/ingest");
    let partial: u64 = dir_entries(&ingest)
        .iter()
        .filter_map(|d| fs::metadata(ingest.join(d).join("data")).ok())
        .map(|m| m.len())
        .sum();
    assert!(partial >= 150_000, "the partial download was not kept ({partial} bytes)");
    proxy.unlimited();
    proxy.cut_stalled();
    let (_, err) = env.ok(&["pull", &src]);
    assert!(err.contains("pulled (resumed)"), "{err}");
    let ranged = proxy.requests().iter().filter(|r| r.contains("Range: bytes=")).count();
    assert!(ranged >= 1, "no range request was made to resume");
    assert_eq!(env.images_json(&env.root()).len(), 1);
    assert!(dir_entries(&ingest).is_empty(), "ingest left after a completed pull");
}

/// Runs `berth pull src`, which must end by itself (a guard kills it after two minutes: a
/// registry dripping bytes used to keep a pull alive for ever), and returns its stderr.
fn pull_must_give_up(env: &Env, root: &Path, src: &str) -> String {
    let mut child = env.cmd(root, &["pull", src]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    if !poll_until(Duration::from_secs(120), || child.try_wait().unwrap().is_some()) {
        // SAFETY: kill by pid of our own unreaped child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        panic!("berth pull {src} was never cut off by a dripping registry");
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the pull through a dripping registry succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cli_dripping_registry_is_cut_off_by_the_deadlines() {
    let (env, proxy, src) = big_image_env();
    let layer = {
        let m: Value = serde_json::from_str(
            &skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{src}")]).unwrap(),
        )
        .unwrap();
        m["layers"][0]["digest"].as_str().unwrap().to_string()
    };
    // One byte every 50 ms keeps every read alive (the stall timeout never fires): only the
    // deadlines end it. Small deadlines make the test fast; nothing here measures time.
    let drip = Duration::from_millis(50);
    env.write_config("retries = 1\nstall-timeout = 60\nblob-timeout = 2\nmin-download-rate = 1000000\n");
    proxy.drip(Some(berth_testkit::registry::Drip::Blobs { after: 20_000 }), drip);
    let err = pull_must_give_up(&env, &env.root(), &src);
    assert!(
        err.contains(&format!("download of blob {layer} from {}", proxy.addr()))
            && err.contains("exceeded its deadline"),
        "{err}"
    );
    assert!(err.contains("registries.blob-timeout") && err.contains("registries.min-download-rate"), "{err}");
    assert_consistent_empty(&env, &env.root());
    // The config (a small blob, into a store without it) dripped from its first byte: the
    // fixed deadline.
    env.write_config("retries = 1\nstall-timeout = 60\nmanifest-timeout = 2\n");
    proxy.drip(Some(berth_testkit::registry::Drip::Blobs { after: 0 }), drip);
    let fresh = env.tmp.path().join("root-drip");
    let err = pull_must_give_up(&env, &fresh, &src);
    assert!(err.contains("exceeded its deadline") && err.contains("registries.manifest-timeout is 2s"), "{err}");
    // The manifest, its status line and headers included.
    proxy.drip(Some(berth_testkit::registry::Drip::Manifests), drip);
    let err = pull_must_give_up(&env, &fresh, &src);
    assert!(err.contains(&format!("registry {}", proxy.addr())) && err.contains("/manifests/"), "{err}");
    assert!(err.contains("no complete answer in time: registries.manifest-timeout is 2s"), "{err}");
    assert_consistent_empty(&env, &env.root());
    // At full speed again, the pull completes.
    proxy.drip(None, drip);
    env.ok(&["pull", "-q", &src]);
}

#[test]
fn cli_registry_stopped_mid_layer_then_pull_completes() {
    let (mut env, proxy, src) = big_image_env();
    env.write_config("retries = 1\nstall-timeout = 5\n");
    proxy.limit_blob_bytes(250_000, AfterBudget::Stall);
    let child = env.cmd(&env.root(), &["pull", &src]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until("the transfer to stall", Duration::from_secs(60), || proxy.has_stalled());
    env.registry.stop();
    proxy.cut_stalled();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("download of blob") || err.contains("registry"), "{err}");
    assert_consistent_empty(&env, &env.root());
    env.registry.restart().unwrap();
    proxy.unlimited();
    let (_, err) = env.ok(&["pull", &src]);
    assert!(err.contains("pulled (resumed)"), "{err}");
    assert_eq!(env.images_json(&env.root()).len(), 1);
}

#[test]
fn cli_killed_pull_leaves_consistent_store() {
    let (env, proxy, src) = big_image_env();
    proxy.limit_blob_bytes(150_000, AfterBudget::Stall);
    let mut child = env.cmd(&env.root(), &["pull", &src]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_until("the transfer to stall", Duration::from_secs(60), || proxy.has_stalled());
    // The proxy has sent its budget; wait until berth has it in the ingest (on a loaded
    // machine it may still be in the socket when the stall is seen).
    let ingest = env.root().join("content/ingest");
    let partial = || -> u64 {
        dir_entries(&ingest)
            .iter()
            .filter_map(|d| fs::metadata(ingest.join(d).join("data")).ok())
            .map(|m| m.len())
            .sum()
    };
    wait_until("the partial download to reach the ingest", Duration::from_secs(60), || partial() >= 100_000);
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert_consistent_empty(&env, &env.root());
    let leftovers = dir_entries(&env.root().join("layers"));
    assert!(leftovers.iter().all(|l| l.starts_with(".tmp-")), "only private temp dirs may be left: {leftovers:?}");
    assert!(!leftovers.is_empty(), "the killed pull had started unpacking");
    proxy.unlimited();
    proxy.cut_stalled();
    let (_, err) = env.ok(&["pull", &src]);
    assert!(err.contains("pulled (resumed)"), "{err}");
    assert_eq!(env.images_json(&env.root()).len(), 1);
    assert!(
        dir_entries(&env.root().join("layers")).iter().all(|l| !l.starts_with('.')),
        "the next pull removes what the killed one left"
    );
}

#[test]
fn cli_hostile_and_inconsistent_images_are_rejected() {
    let env = Env::new();
    let t = env.tmp.path();
    // Path traversal inside a layer.
    let repo = env.push("hostile", "test/hostile:v1");
    let err = env.fail(&["pull", &repo]);
    assert!(err.contains(&env.fx.hostile_layer) && err.contains("../../../berth-hostile-escape"), "{err}");
    assert!(!t.join("berth-hostile-escape").exists() && !Path::new("/berth-hostile-escape").exists());
    assert!(!env.root().parent().unwrap().join("berth-hostile-escape").exists());
    assert_consistent_empty(&env, &env.root());
    // DiffID that does not match the layer.
    let repo = env.push("badiff", "test/badiff:v1");
    let err = env.fail(&["pull", &repo]);
    assert!(err.contains("DiffID mismatch") && err.contains("rootfs.diff_ids"), "{err}");
    assert_consistent_empty(&env, &env.root());
    // A blob the registry serves corrupted.
    let repo = env.push("simple", "test/corrupt:v1");
    let layer =
        env.fx.simple.manifest["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let data = env.registry.storage().join(format!("docker/registry/v2/blobs/sha256/{}/{layer}/data", &layer[..2]));
    let mut bytes = fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    fs::write(&data, bytes).unwrap();
    let root = t.join("root-corrupt");
    let o = env.run_in(&root, &["pull", &repo]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("digest mismatch") && err.contains(&layer), "{err}");
    assert_consistent_empty(&env, &root);
    assert!(dir_entries(&root.join("content/blobs/sha256")).len() <= 1, "only the config may be stored");
    // Names and references that do not exist.
    let err = env.fail(&["pull", &format!("{}/test/nothing:here", env.registry.addr())]);
    assert!(err.contains("404") && err.contains("MANIFEST_UNKNOWN"), "{err}");
    let err = env.fail(&["pull", "Not A Reference"]);
    assert!(err.contains("invalid"), "{err}");
    env.write_config("bogus-option = 1\n");
    let err = env.fail(&["images"]);
    assert!(err.contains("bogus-option"), "{err}");
}

#[test]
fn cli_sparse_layers_keep_holes_and_count_against_the_image_size_limit() {
    use berth_testkit::image::{Compression as C, Layer, LayerBuilder, OciLayout};
    let env = Env::new();
    // A layer of a few KB: a 4 GiB old-GNU sparse file and a 1 GiB PAX 1.0 one.
    let dir = env.tmp.path().join("sparse");
    let mut layout = OciLayout::create(&dir).unwrap();
    let mut b = LayerBuilder::new();
    b.gnu_sparse("huge", 4 << 30, &[(0, &[1u8; 512]), ((4 << 30) - 512, &[2u8; 512])]).pax_sparse(
        "1.0",
        "also-huge",
        1 << 30,
        &[(1 << 20, &[3u8; 512])],
    );
    let tar = b.finish();
    let layer_blob = compress(&tar, C::Gzip);
    let layer_digest = format!("sha256:{}", berth_testkit::image::sha256_hex(&layer_blob));
    assert!(layer_blob.len() < 8192, "{} bytes", layer_blob.len());
    let info =
        layout.image(&[Layer { tar, compression: C::Gzip }], serde_json::json!({"Cmd": ["/bin/sh"]}), "amd64").unwrap();
    layout.tag("sparse", &info.manifest_descriptor).unwrap();
    let repo = format!("{}/test/sparse:v1", env.registry.addr());
    skopeo_push(&dir, "sparse", &repo, false, None, None).unwrap();
    // Over a 2 GiB limit: refused at the entry that passes it, nothing recorded.
    fs::write(env.config(), "[registries]\nretries = 2\n[storage]\nmax-image-size = \"2GiB\"\n").unwrap();
    let err = env.fail(&["pull", &repo]);
    assert!(err.contains(&format!("layer {layer_digest}: entry \"huge\"")), "{err}");
    assert!(err.contains("more than 2147483648 bytes unpacked") && err.contains("storage.max-image-size"), "{err}");
    assert_consistent_empty(&env, &env.root());
    // Under the default limit: pulled, the holes kept as holes.
    env.write_config("");
    env.ok(&["pull", "-q", &repo]);
    let img = env.inspect_in(&env.root(), &repo);
    let layer = layer_dir(&env.root(), img["Layers"][0]["ChainID"].as_str().unwrap());
    for (name, size) in [("huge", 4u64 << 30), ("also-huge", 1 << 30)] {
        let md = fs::metadata(layer.join(name)).unwrap();
        assert_eq!(md.len(), size, "{name}");
        assert!(md.blocks() * 512 <= 1 << 20, "{name}: {} bytes on disk", md.blocks() * 512);
    }
    assert_eq!(img["Size"].as_u64(), Some((4 << 30) + (1 << 30)), "the size counts the holes");
}

#[test]
fn cli_concurrent_pulls_share_one_store() {
    let env = Env::new();
    let repo = env.push("multi", "test/conc:v1");
    let children: Vec<_> = (0..3)
        .map(|_| {
            env.cmd(&env.root(), &["pull", "-q", &repo]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let imgs = env.images_json(&env.root());
    assert_eq!(imgs.len(), 1);
    assert_eq!(dir_entries(&env.root().join("layers")).len(), 3);
    assert!(dir_entries(&env.root().join("content/ingest")).is_empty());
}

#[test]
fn cli_short_names_and_mirrors_from_config() {
    let env = Env::new();
    env.push("simple", "busybox:latest");
    // Short names resolve to the first short-name registry; a mirror that is down is skipped.
    let dead = berth_testkit::registry::free_port().unwrap();
    env.write_config(&format!(
        "short-name-registries = [\"example.invalid\"]\n[[registries.mirrors]]\nregistry = \"example.invalid\"\nlocations = [\"127.0.0.1:{dead}\", \"{}\"]\n",
        env.registry.addr()
    ));
    let (_, err) = env.ok(&["pull", "busybox"]);
    assert!(err.contains(&format!("mirror 127.0.0.1:{dead}")), "{err}");
    let img = env.inspect_in(&env.root(), "busybox");
    assert_eq!(img["RepoTags"][0], "example.invalid/busybox:latest");
    assert_eq!(img["Id"], env.fx.simple.config_digest.as_str());
}

#[test]
fn cli_gc_removes_what_a_crash_left_behind() {
    let env = Env::new();
    let repo = env.push("simple", "test/gc:v1");
    env.ok(&["pull", "-q", &repo]);
    let root = env.root();
    // What a crash between the steps of a pull or a removal leaves: a blob and a layer
    // without records, a half-done removal, an unpack in progress, an abandoned download.
    let orphan_blob = root.join("content/blobs/sha256").join("ab".repeat(32));
    fs::write(&orphan_blob, b"orphan").unwrap();
    let orphan_layer = root.join("layers").join("cd".repeat(32));
    fs::create_dir_all(orphan_layer.join("etc")).unwrap();
    fs::create_dir_all(root.join("layers/.trash-1-dead/x")).unwrap();
    fs::create_dir_all(root.join("layers/.tmp-1-dead/y")).unwrap();
    let stale = root.join("content/ingest").join("ef".repeat(32));
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("data"), b"partial").unwrap();
    let old = std::ffi::CString::new(stale.join("data").as_os_str().as_encoded_bytes()).unwrap();
    let t = libc::timeval { tv_sec: 1_000_000_000, tv_usec: 0 };
    assert_eq!(unsafe { libc::utimes(old.as_ptr(), [t, t].as_ptr()) }, 0);
    let fresh = root.join("content/ingest").join("12".repeat(32));
    fs::create_dir_all(&fresh).unwrap();
    fs::write(fresh.join("data"), b"resumable").unwrap();

    let (out, _) = env.ok(&["image", "prune"]);
    assert!(out.contains("1 blob(s)") && out.contains("1 layer(s)") && out.contains("3 leftover(s)"), "{out}");
    assert!(!orphan_blob.exists() && !orphan_layer.exists() && !stale.exists());
    assert!(fresh.exists(), "a recent download must stay resumable");
    assert!(dir_entries(&root.join("layers")).iter().all(|l| !l.starts_with('.')));
    // The image is untouched and still complete.
    let img = env.inspect_in(&root, &repo);
    assert!(layer_dir(&root, img["Layers"][0]["ChainID"].as_str().unwrap()).join("bin/busybox").is_file());
    let save = env.tmp.path().join("after-gc.tar");
    env.ok(&["save", "-o", save.to_str().unwrap(), &repo]);
}

#[test]
fn cli_empty_database_stops_every_command_and_prune_deletes_nothing() {
    // The fault: berth.db left empty (a crash or a full disk while it was written). An empty
    // file used to be taken for a new store, and `image prune --all` then deleted every blob
    // and layer the lost records had kept.
    let env = Env::new();
    let repo = env.push("simple", "test/dbloss:v1");
    env.ok(&["pull", "-q", &repo]);
    let root = env.root();
    let db = root.join("berth.db");
    let good = fs::read(&db).unwrap();
    let blobs = dir_entries(&root.join("content/blobs/sha256"));
    let layers = dir_entries(&root.join("layers"));
    assert!(blobs.len() >= 3 && layers.len() == 1, "{blobs:?} {layers:?}");
    fs::write(&db, b"").unwrap();
    for args in [
        vec!["image", "prune", "--all"],
        vec!["system", "prune", "--all"],
        vec!["images"],
        vec!["pull", "-q", &repo],
        vec!["system", "df"],
    ] {
        let err = env.fail(&args);
        assert!(
            err.contains(&format!("{} is empty (0 bytes)", db.display()))
                && err.contains("refusing to start a new database")
                && err.contains("Recovering the metadata database"),
            "berth {args:?}: {err}"
        );
    }
    assert_eq!(dir_entries(&root.join("content/blobs/sha256")), blobs, "blobs were deleted");
    assert_eq!(dir_entries(&root.join("layers")), layers, "layers were deleted");
    assert_eq!(fs::metadata(&db).unwrap().len(), 0, "the empty database was replaced");
    // Restored from a backup, the store is whole again.
    fs::write(&db, &good).unwrap();
    let img = env.inspect_in(&root, &repo);
    assert!(layer_dir(&root, img["Layers"][0]["ChainID"].as_str().unwrap()).join("bin/busybox").is_file());
}

#[test]
fn cli_tls_registry_verified_against_system_roots() {
    let env = Env::new();
    let (ca, cert, key) = berth_testkit::registry::make_test_certs(&env.tmp.path().join("certs")).unwrap();
    let reg = Registry::start_tls(&env.tmp.path().join("tls-registry"), &cert, &key).unwrap();
    let dest = format!("{}/test/tls:v1", reg.addr());
    skopeo_push(&env.fx.layout, "simple", &dest, false, None, None).unwrap();
    // Trusted (the test CA as the system roots, via SSL_CERT_FILE): pulled over HTTPS.
    let o = env.cmd(&env.root(), &["pull", "-q", &dest]).env("SSL_CERT_FILE", &ca).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(env.inspect_in(&env.root(), &dest)["Id"], env.fx.simple.config_digest.as_str());
    // Not trusted: the certificate is refused, and plain HTTP gets nowhere either.
    let empty = env.tmp.path().join("no-roots.pem");
    fs::write(&empty, "").unwrap();
    let root = env.tmp.path().join("root-untrusted");
    let o = env
        .cmd(&root, &["pull", "-q", &dest])
        .env("SSL_CERT_FILE", &empty)
        .env("SSL_CERT_DIR", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn cli_bearer_tokens_from_token_server_accepted_by_distribution() {
    let env = Env::new();
    let tokens =
        berth_testkit::registry::TokenServer::start(&env.tmp.path().join("tokens"), "tokuser", "tokpass").unwrap();
    let reg = Registry::start_token_auth(&env.tmp.path().join("token-registry"), &tokens).unwrap();
    let src = format!("{}/test/tok:v1", reg.addr());
    skopeo_push(&env.fx.layout, "multi", &src, false, None, Some("tokuser:tokpass")).unwrap();
    // Anonymous pull: the registry sends us to the token server, which grants pull.
    env.ok(&["pull", "-q", &src]);
    let reqs = tokens.requests();
    assert!(
        reqs.iter().any(|r| r.contains("service=berth-test-registry")
            && r.contains("scope=repository%3Atest%2Ftok%3Apull")
            && r.ends_with("basic=false")),
        "{reqs:?}"
    );
    // Push needs credentials: the token server grants push only to them.
    let dest = format!("{}/test/tok-pushed:v1", reg.addr());
    let err = env.fail(&["push", &src, &dest]);
    assert!(err.contains("401") && err.contains("berth login"), "{err}");
    let err = env.fail(&["login", "-u", "tokuser", "-p", "wrong", &reg.addr()]);
    assert!(err.contains("token request") && err.contains("401"), "{err}");
    env.ok(&["login", "-u", "tokuser", "-p", "tokpass", &reg.addr()]);
    let (_, err) = env.ok(&["push", &src, &dest]);
    assert!(err.contains("4 mounted"), "cross-repository mount with a token for both repositories: {err}");
    assert!(tokens.requests().iter().any(|r| r.contains("tok-pushed%3Apull%2Cpush")
        && r.contains("scope=repository%3Atest%2Ftok%3Apull")
        && r.ends_with("basic=true")));
    let sk: Value = serde_json::from_str(
        &skopeo(&["inspect", "--tls-verify=false", "--creds", "tokuser:tokpass", &format!("docker://{dest}")]).unwrap(),
    )
    .unwrap();
    assert_eq!(sk["Digest"], env.fx.multi.manifest_descriptor["digest"]);
}

#[test]
fn cli_layer_cache_poisoning_is_refused() {
    use berth_testkit::image::{Compression as C, Layer, LayerBuilder, OciLayout};
    let env = Env::new();
    // A hostile image whose config claims the DiffID of `simple`'s busybox layer for a layer
    // of its own: were it unpacked under that chain ID, the legitimate image would use it.
    let dir = env.tmp.path().join("poison");
    let mut layout = OciLayout::create(&dir).unwrap();
    let mut b = LayerBuilder::new();
    b.dir("bin/", 0o755).file("bin/busybox", 0o755, b"#!/bin/sh\necho pwned\n").file("poisoned", 0o644, b"planted\n");
    let info = layout
        .image_with_diff_ids(
            &[Layer { tar: b.finish(), compression: C::Gzip }],
            serde_json::json!({"Cmd": ["/bin/sh"]}),
            "amd64",
            Some(env.fx.simple.diff_ids.clone()),
        )
        .unwrap();
    layout.tag("poison", &info.manifest_descriptor).unwrap();
    let poison = format!("{}/test/poison:v1", env.registry.addr());
    skopeo_push(&dir, "poison", &poison, false, None, None).unwrap();
    let legit = env.push("simple", "test/legit:v1");
    let chain = env.fx.simple.diff_ids[0].clone(); // one layer: its chain ID is its DiffID
    let check_legit = |root: &Path| {
        let l = layer_dir(root, &chain);
        assert!(!l.join("poisoned").exists(), "the legitimate image uses the hostile layer");
        assert!(fs::metadata(l.join("bin/busybox")).unwrap().len() > 100_000, "bin/busybox is not busybox");
    };

    // The hostile pull fails, twice (the second attempt finds the blob already stored), and
    // neither leaves anything under the legitimate layer's chain ID.
    for attempt in 0..2 {
        let err = env.fail(&["pull", &poison]);
        assert!(err.contains("DiffID mismatch"), "attempt {attempt}: {err}");
        assert!(!layer_dir(&env.root(), &chain).exists(), "attempt {attempt}: a layer was committed");
    }
    env.ok(&["pull", "-q", &legit]);
    check_legit(&env.root());

    // A chain directory without a record (planted, or left by an older berth) is not trusted.
    let root = env.tmp.path().join("root-planted");
    env.ok_in(&root, &["images"]); // the store and its database first: content alone is no new store
    fs::create_dir_all(layer_dir(&root, &chain).join("bin")).unwrap();
    fs::write(layer_dir(&root, &chain).join("poisoned"), b"planted\n").unwrap();
    fs::write(layer_dir(&root, &chain).join("bin/busybox"), b"#!/bin/sh\n").unwrap();
    env.ok_in(&root, &["pull", "-q", &legit]);
    check_legit(&root);
    // Loading the hostile image from an archive is refused the same way.
    let root = env.tmp.path().join("root-load");
    let o = env.run_in(&root, &["load", "-i", dir.to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("DiffID mismatch"));
    env.ok_in(&root, &["pull", "-q", &legit]);
    check_legit(&root);
}

#[test]
fn cli_credentials_stay_with_the_registry_across_redirects() {
    // A registry that needs credentials, behind a front that redirects blob downloads.
    let env = Env::with_auth(Some(("berth", "s3cret")));
    let repo = format!("{}/test/redir:v1", env.registry.addr());
    skopeo_push(&env.fx.layout, "simple", &repo, false, None, Some("berth:s3cret")).unwrap();
    let front = Proxy::start(env.registry.port).unwrap();
    let src = format!("{}/test/redir:v1", front.addr());

    // To a CDN that needs nothing: followed, and our credentials do not go there.
    let open = Registry::start(&env.tmp.path().join("open-registry"), None).unwrap();
    skopeo_push(&env.fx.layout, "simple", &format!("{}/test/redir:v1", open.addr()), false, None, None).unwrap();
    let cdn = Proxy::start(open.port).unwrap();
    front.redirect_blobs_to(Some(&cdn.addr()));
    env.ok(&["pull", "-q", "--creds", "berth:s3cret", &src]);
    assert!(!cdn.requests().is_empty(), "the blobs did not come from the redirect target");
    assert!(cdn.requests().iter().all(|r| !r.contains("Authorization")), "{:#?}", cdn.requests());

    // To a host that answers 401 with a token realm of its own: no credentials are sent there.
    let evil = Proxy::start(env.registry.port).unwrap();
    evil.require_bearer("evil", "berth", "s3cret");
    front.redirect_blobs_to(Some(&evil.addr()));
    let root = env.tmp.path().join("root-evil");
    let o = env.run_in(&root, &["pull", "-q", "--creds", "berth:s3cret", &src]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        evil.token_requests().is_empty(),
        "credentials went to the other host's realm: {:?}",
        evil.token_requests()
    );
    assert!(err.contains("401") && err.contains(&evil.addr()) && err.contains("redirected"), "{err}");
    assert!(evil.requests().iter().all(|r| !r.contains("Authorization")), "{:#?}", evil.requests());
}

#[test]
fn cli_refuses_to_run_without_root() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    for args in [&["images"][..], &["pull", "127.0.0.1:1/x:y"]] {
        let o = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--root")
            .arg(&root)
            .args(["--config", "/dev/null"])
            .args(args)
            .env_remove("BERTH_ROOT")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(err.contains("berth needs root") && err.contains(root.to_str().unwrap()), "{args:?}: {err}");
    }
}

#[test]
fn cli_mirror_failing_blobs_falls_back_to_the_registry() {
    let env = Env::new();
    let repo = env.push("multi", "test/mirrored:v1");
    // A mirror that serves manifests but cuts every blob download.
    let mirror = Proxy::start(env.registry.port).unwrap();
    mirror.limit_blob_bytes(0, AfterBudget::Cut);
    env.write_config(&format!(
        "retries = 1\n[[registries.mirrors]]\nregistry = \"{}\"\nlocations = [\"{}\"]\n",
        env.registry.addr(),
        mirror.addr()
    ));
    let (_, err) = env.ok(&["pull", &repo]);
    assert!(mirror.requests().iter().any(|r| r.contains("/manifests/")), "the mirror was not asked first");
    assert!(err.contains(&format!("from {}", mirror.addr())) && err.contains("trying the next endpoint"), "{err}");
    let img = env.inspect_in(&env.root(), &repo);
    assert_eq!(img["Id"], env.fx.multi.config_digest.as_str());
    assert_eq!(img["Layers"].as_array().unwrap().len(), 3);
}

#[test]
fn cli_credentials_found_along_the_auth_file_chain() {
    // $XDG_RUNTIME_DIR is set but holds no containers/auth.json: ~/.docker/config.json is
    // still read (podman's and skopeo's order), and berth login writes the XDG file.
    let env = Env::with_auth(Some(("berth", "s3cret")));
    let dest = format!("{}/test/chain:v1", env.registry.addr());
    skopeo_push(&env.fx.layout, "simple", &dest, false, None, Some("berth:s3cret")).unwrap();
    let (run, home) = (env.tmp.path().join("run"), env.tmp.path().join("home"));
    fs::create_dir_all(&run).unwrap();
    fs::create_dir_all(home.join(".docker")).unwrap();
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b"berth:s3cret")
    };
    fs::write(
        home.join(".docker/config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, env.registry.addr()),
    )
    .unwrap();
    let berth = |root: &Path, args: &[&str]| {
        let mut c = env.cmd(root, args);
        c.env_remove("REGISTRY_AUTH_FILE").env("XDG_RUNTIME_DIR", &run).env("HOME", &home);
        c.output().unwrap()
    };
    let o = berth(&env.root(), &["pull", "-q", &dest]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = berth(&env.root(), &["login", "-u", "berth", "-p", "s3cret", &env.registry.addr()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(run.join("containers/auth.json").is_file(), "login did not write $XDG_RUNTIME_DIR/containers/auth.json");
    // Logging out removes what berth wrote; docker's file is another tool's and is left.
    let o = berth(&env.root(), &["logout", &env.registry.addr()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = berth(&env.root(), &["logout", &env.registry.addr()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(".docker/config.json"), "{err}");
}

#[test]
fn cli_push_authenticates_again_when_a_token_expires() {
    let env = Env::new();
    let repo = env.push("simple", "test/exp:v1");
    env.ok(&["pull", "-q", &repo]);
    let proxy = Proxy::start(env.registry.port).unwrap();
    proxy.require_bearer("berth-test-registry", "tokuser", "tokpass");
    env.ok(&["login", "-u", "tokuser", "-p", "tokpass", &proxy.addr()]);
    // Every token is good for one request: each request of the push, the blob uploads
    // included, first meets an expired token.
    proxy.token_uses(1);
    let dest = format!("{}/test/exp-pushed:v1", proxy.addr());
    let (_, err) = env.ok(&["push", &repo, &dest]);
    assert!(err.contains("2 uploaded"), "{err}");
    let sk: Value = serde_json::from_str(
        &skopeo(&["inspect", "--tls-verify=false", &format!("docker://{}/test/exp-pushed:v1", env.registry.addr())])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(sk["Digest"], env.fx.simple.manifest_descriptor["digest"]);
}
