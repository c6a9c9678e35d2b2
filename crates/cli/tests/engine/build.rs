//! `berth build` end to end: Containerfiles built in the suite's store, the results run and
//! inspected; multi-stage builds and the cache; errors that leave nothing behind; a built
//! image pushed to a registry and pulled back into another store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// A build context for `test`: `files` (path, content) written under it.
fn context(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = suite().dir.join(format!("build-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    dir
}

/// A store root of the test's own (with the test images): what is in it is what the test
/// made, and its cache and images do not meet the other tests'. Its default network is its
/// own too (bridge and subnet), removed when the test ends.
struct Root {
    path: PathBuf,
    config: PathBuf,
    network: String,
}

impl Root {
    fn new(test: &str, index: u32) -> Root {
        let pid = std::process::id();
        let path = suite().dir.join(format!("build-root-{test}"));
        let network = format!("btn{pid}-{index}");
        let bridge = format!("btc{}-{index}", pid % 100_000);
        let subnet = berth_testkit::network::free_subnet(pid + 101 + index * 7);
        let base = std::fs::read_to_string(&suite().config).unwrap();
        let config = suite().dir.join(format!("berth-{test}.toml"));
        let own = base
            .replace(&format!("default-name = \"{}\"", suite().network), &format!("default-name = \"{network}\""))
            .replace(&format!("default-bridge = \"{}\"", suite().bridge), &format!("default-bridge = \"{bridge}\""))
            .replace(&format!("default-subnet = \"{}\"", suite().subnet), &format!("default-subnet = \"{subnet}\""));
        assert_ne!(own, base, "the suite's network settings are in its configuration");
        std::fs::write(&config, own).unwrap();
        let root = Root { path, config, network };
        let layout = suite().dir.join("layout-root");
        root.berth(&["load", "-q", "-i", layout.to_str().unwrap()]).ok("load the test images");
        root
    }

    /// `berth` on this root, with this root's configuration.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(&suite().berth);
        c.arg("--root").arg(&self.path).arg("--config").arg(&self.config).args(args);
        c.env_remove("BERTH_ROOT").env_remove("BERTH_CONFIG");
        c
    }

    fn berth(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    fn build(&self, ctx: &Path, args: &[&str]) -> Output {
        let mut a = vec!["build"];
        a.extend_from_slice(args);
        a.push(ctx.to_str().unwrap());
        self.berth(&a)
    }

    fn berth_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        berth_testkit::children::run_with_stdin(&mut self.command(args), input)
    }

    fn image_config(&self, name: &str) -> Value {
        let o = self.berth(&["image", "inspect", name]).ok("image inspect");
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        v[0].clone()
    }

    fn run_sh(&self, image: &str, script: &str) -> String {
        self.berth(&["run", "--rm", "--entrypoint", "/bin/sh", image, "-c", script]).ok(script).stdout
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = self.berth(&["network", "rm", &self.network]);
    }
}

const EVERY_INSTRUCTION: &str = r#"# syntax=docker/dockerfile:1
# escape=\
ARG BASE=localhost/berth-test/busybox:1
FROM $BASE AS base
LABEL org.example.stage=base
FROM base
ARG VERSION=1.0
ENV APP_HOME=/srv/app \
    GREETING="hello world"
# a comment inside the file
WORKDIR ${APP_HOME}
COPY --chown=1234:5678 --chmod=0640 conf/*.conf ./conf/
COPY . /ctx/
ADD notes.txt /srv/
RUN echo "version=$VERSION" > version.txt \
 && echo "appuser:x:4321:4321::/home/appuser:/bin/sh" >> /etc/passwd
RUN ["/bin/sh", "-c", "echo exec-form > /srv/app/exec.txt"]
RUN <<EOF
echo heredoc-1 > /srv/app/heredoc.txt
echo heredoc-2 >> /srv/app/heredoc.txt
EOF
COPY <<EOF /srv/app/generated.txt
generated for $VERSION
EOF
SHELL ["/bin/sh", "-e", "-c"]
RUN test "$GREETING" = "hello world" && rm /srv/app/conf/b.conf
USER appuser
EXPOSE 8080 9090/udp
VOLUME /srv/state
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --retries=2 CMD test -f /srv/app/version.txt
ONBUILD RUN echo onbuild-trigger-ran
MAINTAINER someone@example.com
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /srv/app/version.txt"]
"#;

pub fn build_runs_every_instruction() {
    let r = Root::new("every", 1);
    let ctx = context(
        "every",
        &[
            ("Containerfile", EVERY_INSTRUCTION),
            ("conf/a.conf", "a=1\n"),
            ("conf/b.conf", "b=2\n"),
            ("conf/readme.txt", "not a conf\n"),
            ("notes.txt", "notes\n"),
            ("secret.key", "never copied\n"),
            ("logs/debug.log", "ignored\n"),
            (".dockerignore", "*.key\nlogs\n"),
        ],
    );
    let tag = format!("localhost/build-every:{}", std::process::id());
    let o = r.build(&ctx, &["-t", &tag]).ok("build");
    assert!(o.stdout.contains("STEP 1/"), "{}", o.stdout);
    let id = o.stdout.lines().last().unwrap().to_string();
    assert!(id.starts_with("sha256:"), "the image ID last: {}", o.stdout);

    // The files.
    assert_eq!(r.berth(&["run", "--rm", &tag]).ok("run the image").stdout, "version=1.0\n");
    let listing = r.run_sh(
        &tag,
        "cd /srv/app && ls -ln conf && cat exec.txt heredoc.txt generated.txt /srv/notes.txt && id -u && pwd",
    );
    let conf: Vec<&str> = listing.lines().filter(|l| l.contains(".conf")).collect();
    assert_eq!(conf.len(), 1, "b.conf deleted by a later step, readme.txt not matched: {listing}");
    assert!(conf[0].starts_with("-rw-r-----") && conf[0].contains(" 1234 ") && conf[0].contains(" 5678 "), "{listing}");
    for want in ["exec-form", "heredoc-1\nheredoc-2", "generated for 1.0", "notes", "4321\n/srv/app"] {
        assert!(listing.contains(want), "{want:?} in {listing}");
    }
    let ctx_files = r.run_sh(&tag, "cd /ctx && find . | sort");
    assert!(ctx_files.contains("./notes.txt") && ctx_files.contains("./conf/a.conf"), "{ctx_files}");
    assert!(!ctx_files.contains("secret.key") && !ctx_files.contains("logs"), ".dockerignore: {ctx_files}");
    // No mount target the runtime made is in a layer.
    let made = r.run_sh(&tag, "ls -a /etc");
    assert!(made.contains("passwd"), "{made}");

    // The config.
    let img = r.image_config(&tag);
    let c = &img["Config"];
    let env: Vec<&str> = c["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(env.contains(&"APP_HOME=/srv/app") && env.contains(&"GREETING=hello world"), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("VERSION=")), "build args are not kept: {env:?}");
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["User"], "appuser");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}, "9090/udp": {}}));
    assert_eq!(c["Volumes"], serde_json::json!({"/srv/state": {}}));
    assert_eq!(c["StopSignal"], "SIGUSR1");
    assert_eq!(c["Labels"]["org.example.stage"], "base");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["cat /srv/app/version.txt"]));
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-e", "-c"]));
    assert_eq!(c["Healthcheck"]["Test"], serde_json::json!(["CMD-SHELL", "test -f /srv/app/version.txt"]));
    assert_eq!(c["Healthcheck"]["Interval"], 5_000_000_000u64);
    assert_eq!(c["Healthcheck"]["Retries"], 2);
    assert_eq!(c["OnBuild"], serde_json::json!(["RUN echo onbuild-trigger-ran"]));
    assert_eq!(img["Author"], "someone@example.com");
    let history = img["History"].as_array().unwrap();
    let with_layers = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(with_layers, img["Layers"].as_array().unwrap().len(), "a history entry per layer: {history:?}");
    assert!(history.iter().any(|h| h["created_by"] == "USER appuser" && h["empty_layer"] == true), "{history:?}");

    // A build arg, and ONBUILD in a child.
    r.build(&ctx, &["-q", "-t", &format!("{tag}-v2"), "--build-arg", "VERSION=2.0"]).ok("build with an arg");
    assert_eq!(r.berth(&["run", "--rm", &format!("{tag}-v2")]).ok("run v2").stdout, "version=2.0\n");
    let child = context("every-child", &[("Containerfile", &format!("FROM {tag}\nRUN echo child-step\n"))]);
    let o = r.build(&child, &["-t", &format!("{tag}-child")]).ok("build a child");
    assert!(o.stdout.contains("onbuild-trigger-ran"), "{}", o.stdout);
    assert!(r.image_config(&format!("{tag}-child"))["Config"]["OnBuild"].is_null(), "triggers are not inherited");
}

pub fn build_multi_stage_cache_and_target() {
    let r = Root::new("stages", 2);
    let ctx = context(
        "stages",
        &[
            (
                "Containerfile",
                "FROM localhost/berth-test/busybox:1 AS builder\n\
                 COPY input.txt /work/input.txt\n\
                 RUN echo \"run-marker-$(cat /work/input.txt)\" && tr a-z A-Z < /work/input.txt > /work/output.txt\n\
                 FROM localhost/berth-test/busybox:1 AS unused\n\
                 RUN echo unused-stage-ran && false\n\
                 FROM localhost/berth-test/busybox:1\n\
                 RUN rm -rf /home\n\
                 COPY --from=builder /work/output.txt /out.txt\n\
                 CMD [\"cat\", \"/out.txt\"]\n",
            ),
            ("input.txt", "abc"),
        ],
    );
    let tag = format!("localhost/build-stages:{}", std::process::id());
    let first = r.build(&ctx, &["-t", &tag]).ok("build");
    assert!(first.stdout.contains("run-marker-abc"), "{}", first.stdout);
    assert!(!first.stdout.contains("unused-stage-ran"), "a stage the target does not need is not built");
    assert_eq!(r.berth(&["run", "--rm", &tag]).ok("run").stdout, "ABC");
    assert!(!r.run_sh(&tag, "ls /").contains("home"), "a directory a later step removed is gone");
    let base_layers = r.image_config("localhost/berth-test/busybox:1")["Layers"].as_array().unwrap().len();
    assert_eq!(
        r.image_config(&tag)["Layers"].as_array().unwrap().len(),
        base_layers + 2,
        "only the final stage's layers"
    );

    // Unchanged: every step from the cache, the same image.
    let again = r.build(&ctx, &["-t", &tag]).ok("rebuild");
    assert!(!again.stdout.contains("run-marker-abc"), "no RUN step ran: {}", again.stdout);
    assert!(again.stdout.contains("Using cache"), "{}", again.stdout);
    assert_eq!(again.stdout.lines().last(), first.stdout.lines().last(), "the same image");
    // A copied file changed: from that step on.
    std::fs::write(ctx.join("input.txt"), "xyz").unwrap();
    let changed = r.build(&ctx, &["-t", &tag]).ok("build after a change");
    assert!(changed.stdout.contains("run-marker-xyz"), "{}", changed.stdout);
    assert_eq!(r.berth(&["run", "--rm", &tag]).ok("run").stdout, "XYZ");
    // --no-cache runs everything.
    let fresh = r.build(&ctx, &["--no-cache", "-t", &tag]).ok("build without the cache");
    assert!(fresh.stdout.contains("run-marker-xyz\n") && !fresh.stdout.contains("Using cache"), "{}", fresh.stdout);
    // --target: an earlier stage.
    r.build(&ctx, &["-q", "--target", "builder", "-t", &format!("{tag}-builder")]).ok("build the builder stage");
    assert_eq!(r.run_sh(&format!("{tag}-builder"), "cat /work/output.txt"), "XYZ");
    // Contents that are not text: two files that differ only in bytes no UTF-8 has are two
    // cache entries.
    for byte in [0xffu8, 0xfe] {
        std::fs::write(ctx.join("input.txt"), [byte]).unwrap();
        r.build(&ctx, &["-q", "-t", &tag]).ok("build a binary input");
        let out = r.run_sh(&tag, "od -An -tx1 /out.txt");
        assert_eq!(out.trim(), format!("{byte:02x}"), "the copied file, not a cached one");
    }
}

pub fn build_errors_leave_nothing() {
    let r = Root::new("errors", 3);
    let before_images = r.berth(&["images", "-a", "-q"]).ok("images").stdout;
    let snapshots = r.path.join("snapshots");
    let count = |p: &Path| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    let before_snapshots = count(&snapshots);
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "syntax",
            "FROM localhost/berth-test/busybox:1\n\n  FRUM x\n",
            &[],
            "line 3, column 3: unknown instruction \"FRUM\"",
        ),
        ("flag", "FROM localhost/berth-test/busybox:1\nCOPY --form=x a b\n", &[], "COPY has no flag --form"),
        ("nofrom", "# nothing\n", &[], "no FROM"),
        ("outside", "FROM localhost/berth-test/busybox:1\nCOPY ../x /x\n", &[], "../x: outside the build context"),
        (
            "missing",
            "FROM localhost/berth-test/busybox:1\nCOPY nope.txt /x\n",
            &[],
            "nope.txt: not found in the build context",
        ),
        ("escape", "FROM localhost/berth-test/busybox:1\nCOPY link /x\n", &[], "leads out of the build context"),
        (
            "runfails",
            "FROM localhost/berth-test/busybox:1\nRUN echo partial > /partial && exit 3\n",
            &[],
            "line 2: RUN: the command exited with status 3",
        ),
        ("nobase", "FROM localhost/no-such-image:1\n", &["--pull=never"], "not in the store and --pull=never"),
        ("nostage", "FROM localhost/berth-test/busybox:1\nCOPY --from=nosuch /x /x\n", &["--pull=never"], "nosuch"),
        ("scratchrun", "FROM scratch\nRUN true\n", &[], "line 2: RUN: there is nothing to run a command in"),
        ("target", "FROM localhost/berth-test/busybox:1 AS a\n", &["--target", "b"], "--target b: no such stage"),
        ("chmod", "FROM localhost/berth-test/busybox:1\nCOPY --chmod=999 Containerfile /x\n", &[], "--chmod=999"),
    ];
    for (name, file, args, want) in cases {
        let ctx = context(&format!("error-{name}"), &[("Containerfile", file)]);
        if *name == "escape" {
            std::os::unix::fs::symlink("/etc/passwd", ctx.join("link")).unwrap();
        }
        let mut a = vec!["-t", "localhost/build-error:1"];
        a.extend_from_slice(args);
        let o = r.build(&ctx, &a).failed(name);
        assert!(o.stderr.contains(want), "{name}: {want:?} in {}", o.stderr);
        assert_eq!(o.stderr.matches("berth:").count(), 1, "{name}: one error: {}", o.stderr);
    }
    assert!(r.berth(&["ps", "-a", "-q"]).ok("ps").stdout.trim().is_empty(), "no container left");
    assert_eq!(count(&snapshots), before_snapshots, "no snapshot left");
    assert_eq!(count(&r.path.join("build-tmp")), 0, "no temporary files left");
    let after_images = r.berth(&["images", "-a", "-q"]).ok("images").stdout;
    assert_eq!(after_images, before_images, "no image left by failed builds");
}

pub fn built_image_pushes_and_pulls_back() {
    let r = Root::new("push", 4);
    let dir = suite().dir.join("build-registry");
    let registry =
        berth_testkit::registry::Registry::start(&dir.join("registry"), None).expect("start docker-registry");
    let ctx = context(
        "push",
        &[(
            "Containerfile",
            "FROM localhost/berth-test/busybox:1\nRUN echo pushed > /pushed.txt\nCMD [\"cat\", \"/pushed.txt\"]\n",
        )],
    );
    let remote = format!("{}/built/app:1", registry.addr());
    for (i, format) in ["oci", "docker"].into_iter().enumerate() {
        r.build(&ctx, &["-q", "--format", format, "-t", &remote]).ok("build");
        r.berth(&["push", &remote]).ok("push");
        let other = Root::new(&format!("push-other-{format}"), 5 + i as u32);
        // `run` pulls what the store lacks, as docker does.
        let o = other.berth(&["run", "--rm", &remote]).ok("run an image only the registry has");
        assert_eq!(o.stdout, "pushed\n");
        assert!(o.stderr.contains(&format!("Pulled {remote}")), "{}", o.stderr);
        let manifest_type = r.image_config(&remote)["MediaType"].clone();
        let want = if format == "oci" {
            "application/vnd.oci.image.manifest.v1+json"
        } else {
            "application/vnd.docker.distribution.manifest.v2+json"
        };
        assert_eq!(manifest_type, want, "{format}");
    }
}

/// A tar of `files` (path, content), owned by 321:654, mode 0640.
fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = berth_testkit::image::LayerBuilder::new();
    b.uid = 321;
    b.gid = 654;
    for (path, content) in files {
        b.file(path, 0o640, content.as_bytes());
    }
    b.finish()
}

/// Serves `body` over HTTP on loopback to every request (with a Last-Modified date) until
/// the returned guard is dropped: its port.
fn serve(body: &'static [u8]) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(body);
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    });
    (port, stop)
}

pub fn build_add_unpacks_archives_and_fetches_urls() {
    use std::io::Write;
    let r = Root::new("add", 8);
    let tar = tar_of(&[("pkg/one.txt", "one"), ("pkg/two.txt", "two")]);
    let ctx = context("add", &[]);
    std::fs::create_dir_all(&ctx).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(&tar).unwrap();
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut &tar[..], &mut xz).unwrap();
    let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
    let mut not_tar = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    not_tar.write_all(b"compressed text\n").unwrap();
    for (name, data) in [
        ("a.tar", tar.clone()),
        ("a.tar.gz", gz.finish().unwrap()),
        ("a.tar.bz2", bz.finish().unwrap()),
        ("a.tar.xz", xz),
        ("a.tar.zst", zst),
        ("note.gz", not_tar.finish().unwrap()),
    ] {
        std::fs::write(ctx.join(name), data).unwrap();
    }
    let (port, stop) = serve(b"downloaded content\n");
    let _stop = Stop(stop);
    let url = format!("http://127.0.0.1:{port}/files/remote.txt");
    std::fs::write(
        ctx.join("Containerfile"),
        format!(
            "FROM localhost/berth-test/busybox:1\n\
             ADD a.tar /plain/\nADD a.tar.gz /gz\nADD a.tar.bz2 /bz2/\nADD a.tar.xz /xz/\nADD a.tar.zst /zst/\n\
             ADD note.gz /notes/\nADD {url} /fetched/\nADD {url} /renamed.txt\n"
        ),
    )
    .unwrap();
    let tag = format!("localhost/build-add:{}", std::process::id());
    r.build(&ctx, &["-q", "-t", &tag]).ok("build");
    let out = r.run_sh(
        &tag,
        "for d in plain gz bz2 xz zst; do cat /$d/pkg/one.txt /$d/pkg/two.txt; echo; done; ls -ln /gz/pkg/one.txt; \
         zcat /notes/note.gz; cat /fetched/remote.txt /renamed.txt; stat -c '%a %Y' /renamed.txt",
    );
    assert_eq!(out.matches("onetwo\n").count(), 5, "every archive unpacked: {out}");
    assert!(
        out.contains(" 321 ") && out.contains(" 654 ") && out.contains("-rw-r-----"),
        "the archive's owners and modes: {out}"
    );
    assert!(out.contains("compressed text"), "a compressed file that is no tar is copied as is: {out}");
    assert_eq!(out.matches("downloaded content").count(), 2, "{out}");
    assert!(out.contains("600 784111777"), "a download is 0600 with its Last-Modified time: {out}");
    // --checksum: a mismatch fails the build.
    std::fs::write(
        ctx.join("Containerfile"),
        format!("FROM localhost/berth-test/busybox:1\nADD --checksum=sha256:{} {url} /x\n", "0".repeat(64)),
    )
    .unwrap();
    let o = r.build(&ctx, &["-q"]).failed("a wrong checksum");
    assert!(o.stderr.contains("not the --checksum"), "{}", o.stderr);
}

struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The Containerfile both builders build (no here-documents: buildah 1.28 has none).
const COMPARED: &str = r#"ARG BASE
FROM $BASE AS base
RUN mkdir -p /built && echo stage-one > /built/one
FROM $BASE
ENV A=1 B="two words"
WORKDIR /app
COPY --chown=1000:1000 files/ ./files/
COPY --chmod=0755 run.sh /usr/local/bin/run.sh
COPY --from=base /built/one /copied/one
ADD archive.tar /opt/
RUN mkdir -p /data && echo hi > /data/hi && chmod 0600 /data/hi && chown 10:20 /data/hi \
 && ln -s /data/hi /data/link && ln /data/hi /data/hard && rm -rf /home && mkfifo /data/fifo
RUN rm /app/files/remove-me && mkdir /app/empty && chmod 1777 /app/empty
USER 1000
EXPOSE 8080/tcp 53/udp
LABEL org.example.a=b
VOLUME /vol
ENTRYPOINT ["/bin/sh"]
CMD ["/usr/local/bin/run.sh"]
"#;

/// Every entry under `root`: type, mode, owner, size or target, and a content hash.
fn tree(root: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let t = m.file_type();
            let what = if t.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if t.is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if t.is_file() {
                let data = std::fs::read(&p).unwrap();
                format!(
                    "file {} bytes, sum {}",
                    data.len(),
                    data.iter().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(*b as u64))
                )
            } else if t.is_fifo() {
                "fifo".into()
            } else {
                format!("device {}", m.rdev())
            };
            out.insert(
                rel,
                format!(
                    "{what} mode {:o} owner {}:{} links {}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    if t.is_file() { m.nlink() } else { 0 }
                ),
            );
        }
    }
    out
}

/// The config of `reference` in the OCI layout `dir`.
fn layout_config(dir: &Path, reference: &str) -> Value {
    let read = |d: &str| -> Value {
        let hex = d.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .unwrap_or_else(|| panic!("{reference} in {index}"));
    let manifest = read(m["digest"].as_str().unwrap());
    read(manifest["config"]["digest"].as_str().unwrap())
}

pub fn build_matches_buildah() {
    let buildah = std::env::var("BUILDAH").unwrap_or_else(|_| "buildah".into());
    if run(std::process::Command::new(&buildah).arg("--version")).code != 0 {
        assert!(std::env::var("CI").is_err(), "buildah is missing (make deps installs it)");
        eprintln!("SKIPPED build_matches_buildah: buildah is not installed");
        return;
    }
    let r = Root::new("buildah", 10);
    let dir = suite().dir.join("buildah-compare");
    let ctx = context(
        "compare",
        &[
            ("Containerfile", COMPARED),
            ("files/one", "one\n"),
            ("files/remove-me", "x\n"),
            ("run.sh", "#!/bin/sh\necho run\n"),
        ],
    );
    std::fs::create_dir_all(ctx.join("files/sub")).unwrap();
    std::fs::write(ctx.join("archive.tar"), tar_of(&[("pkg/a.txt", "archived\n")])).unwrap();
    // berth: built, saved as an OCI layout.
    r.build(&ctx, &["-q", "-t", "localhost/compare:1", "--build-arg", &format!("BASE={IMAGE}")]).ok("berth build");
    let berth_layout = dir.join("berth-layout");
    r.berth(&["save", "--format", "oci-dir", "-o", berth_layout.to_str().unwrap(), "localhost/compare:1"]).ok("save");
    // buildah: the same base from the suite's OCI layout, a store of its own.
    let base = format!("oci:{}:{IMAGE}", suite().dir.join("layout-root").display());
    let bh = |args: &[&str]| {
        let mut c = std::process::Command::new(&buildah);
        c.arg("--root").arg(dir.join("buildah-root")).arg("--runroot").arg(dir.join("buildah-run"));
        c.args(["--storage-driver", "vfs"]).args(args).env("TMPDIR", &dir);
        run(&mut c)
    };
    let ctx_s = ctx.to_str().unwrap();
    bh(&[
        "bud",
        "--layers",
        "--runtime",
        "runc",
        "--isolation",
        "chroot",
        "--build-arg",
        &format!("BASE={base}"),
        "-t",
        "localhost/compare:1",
        ctx_s,
    ])
    .ok("buildah bud");
    let buildah_layout = dir.join("buildah-layout");
    bh(&["push", "localhost/compare:1", &format!("oci:{}:compare", buildah_layout.display())]).ok("buildah push");
    bh(&["rmi", "-a", "-f"]).ok("buildah rmi");
    // Both unpacked by the same tool.
    let unpack = |layout: &Path, reference: &str, bundle: &str| {
        let b = dir.join(bundle);
        run(std::process::Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{reference}", layout.display()))
            .arg(&b))
        .ok("umoci unpack");
        tree(&b.join("rootfs"))
    };
    let ours = unpack(&berth_layout, "localhost/compare:1", "berth-bundle");
    let mut theirs = unpack(&buildah_layout, "compare", "buildah-bundle");
    // buildah 1.28 (chroot isolation) keeps the empty files it bind-mounted over during RUN;
    // they are not the image's (docker leaves them out too).
    for f in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        if !ours.contains_key(f) && theirs.get(f).is_some_and(|d| d.starts_with("file 0 bytes")) {
            theirs.remove(f);
        }
    }
    for (path, d) in &theirs {
        assert_eq!(ours.get(path), Some(d), "{path}: berth's against buildah's");
    }
    assert_eq!(
        ours.len(),
        theirs.len(),
        "berth has more: {:?}",
        ours.keys().filter(|k| !theirs.contains_key(*k)).collect::<Vec<_>>()
    );
    for must in ["data/hard", "data/fifo", "opt/pkg/a.txt", "copied/one", "app/empty"] {
        assert!(ours.contains_key(must), "{must} was compared");
    }
    assert!(!ours.contains_key("home"), "a removed directory is absent in both");
    // berth's layer directories (a RUN's or COPY's upper directory becomes one) hold exactly
    // what its layer blobs do: a container's root exported and unpacked is the same tree.
    let ctr = name("compare-export");
    r.berth(&["create", "--name", &ctr, "localhost/compare:1"]).ok("create");
    let exported = dir.join("exported.tar");
    r.berth(&["export", "-o", exported.to_str().unwrap(), &ctr]).ok("export");
    r.berth(&["rm", &ctr]).ok("rm");
    let unpacked = dir.join("exported");
    std::fs::create_dir_all(&unpacked).unwrap();
    run(std::process::Command::new("tar").arg("--numeric-owner").arg("-xpf").arg(&exported).arg("-C").arg(&unpacked))
        .ok("tar -x");
    let from_dirs = tree(&unpacked);
    for (path, d) in &ours {
        assert_eq!(from_dirs.get(path), Some(d), "{path}: the layer directories against the blobs");
    }
    assert_eq!(from_dirs.len(), ours.len());
    // The configs.
    let (a, b) = (layout_config(&berth_layout, "localhost/compare:1"), layout_config(&buildah_layout, "compare"));
    for key in ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes"] {
        assert_eq!(a["config"][key], b["config"][key], "config.{key}");
    }
    let mut labels = b["config"]["Labels"].clone();
    labels.as_object_mut().unwrap().remove("io.buildah.version");
    assert_eq!(a["config"]["Labels"], labels, "config.Labels (buildah adds its version)");
    let _ = std::fs::remove_dir_all(&dir);
}

pub fn build_mounts_secrets_and_flags() {
    let r = Root::new("mounts", 11);
    let ctx = context(
        "mounts",
        &[
            (
                "Containerfile",
                "FROM localhost/berth-test/busybox:1 AS tools\n\
                 RUN mkdir -p /opt/tool && echo from-stage > /opt/tool/msg && ln -s /etc /opt/escape\n\
                 FROM localhost/berth-test/busybox:1\n\
                 RUN --mount=type=bind,from=tools,source=/opt/tool,target=/tool cat /tool/msg > /from-stage.txt\n\
                 RUN --mount=type=bind,from=tools,source=/opt/escape,target=/esc test -e /esc/passwd && test ! -e /esc/debian_version\n\
                 RUN --mount=type=bind,source=data,target=/src cat /src/input.txt > /from-bind.txt\n\
                 RUN --mount=type=cache,target=/cache,id=c1 echo run >> /cache/runs && cat /cache/runs | wc -l > /cache-count.txt\n\
                 RUN --mount=type=tmpfs,target=/scratch echo temp > /scratch/t && test ! -e /nothing\n\
                 RUN --mount=type=secret,id=token,required=true cat /run/secrets/token | wc -c > /secret-size.txt\n\
                 RUN --mount=type=secret,id=absent,required=false test ! -e /run/secrets/absent\n\
                 RUN --network=none cat /proc/net/dev | grep -c : > /interfaces.txt\n\
                 RUN <<SCRIPT\n#!/bin/sh\necho \"ran as $0\" > /shebang.txt\nSCRIPT\n",
            ),
            ("data/input.txt", "bound\n"),
        ],
    );
    let secret = suite().dir.join("build-secret.txt");
    std::fs::write(&secret, "s3cr3t-value").unwrap();
    let secret_arg = format!("id=token,src={}", secret.display());
    let iid = suite().dir.join("build-iid.txt");
    let o = r
        .build(
            &ctx,
            &[
                "-q",
                "--no-cache",
                "--secret",
                &secret_arg,
                "--iidfile",
                iid.to_str().unwrap(),
                "--label",
                "built.by=test",
                "--compression",
                "zstd",
                "-t",
                "localhost/mounts:1",
            ],
        )
        .ok("build");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), o.stdout.trim(), "--iidfile");
    assert_eq!(
        r.run_sh("localhost/mounts:1", "cat /from-stage.txt; ls / | grep -c -x -e tool -e esc || true"),
        "from-stage\n0\n"
    );
    let shebang = r.run_sh("localhost/mounts:1", "cat /shebang.txt");
    assert_eq!(shebang, "ran as /dev/pipes/SCRIPT\n", "a #! here-document runs as a program");
    let out = r.run_sh("localhost/mounts:1", "cat /from-bind.txt /secret-size.txt /interfaces.txt; ls -a / | grep -c -x -e src -e cache -e scratch; ls /run/secrets 2>&1 || true");
    assert!(out.starts_with("bound\n12\n1\n0\n"), "bind, secret size, only lo, no mount target left: {out}");
    assert!(!out.contains("token"), "the secret is not in the image: {out}");
    let img = r.image_config("localhost/mounts:1");
    assert_eq!(img["Config"]["Labels"]["built.by"], "test");
    assert!(
        img["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["MediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{img}"
    );
    // The cache mount outlives the build: a second build sees the first one's file.
    r.build(&ctx, &["-q", "--no-cache", "--secret", &secret_arg, "-t", "localhost/mounts:2"]).ok("build again");
    assert_eq!(r.run_sh("localhost/mounts:2", "cat /cache-count.txt").trim(), "2");
    // A required secret that is not given fails naming it.
    let o = r.build(&ctx, &["-q", "--no-cache"]).failed("no secret");
    assert!(o.stderr.contains("secret token is required"), "{}", o.stderr);
    // A Containerfile on stdin: no context.
    let o = r.berth_stdin(
        &["build", "-q", "-t", "localhost/stdin:1", "-"],
        b"FROM localhost/berth-test/busybox:1\nRUN echo from-stdin > /s\n",
    );
    o.ok("build from stdin");
    assert_eq!(r.run_sh("localhost/stdin:1", "cat /s"), "from-stdin\n");
    let o = r
        .berth_stdin(&["build", "-q", "-"], b"FROM localhost/berth-test/busybox:1\nCOPY x /x\n")
        .failed("COPY without a context");
    assert!(o.stderr.contains("no build context"), "{}", o.stderr);
    // -f names the file; a platform that is not this host's is refused.
    std::fs::write(ctx.join("Other.containerfile"), "FROM localhost/berth-test/busybox:1\nLABEL which=other\n")
        .unwrap();
    let other = ctx.join("Other.containerfile");
    r.build(&ctx, &["-q", "-f", other.to_str().unwrap(), "-t", "localhost/other:1"]).ok("build -f");
    assert_eq!(r.image_config("localhost/other:1")["Config"]["Labels"]["which"], "other");
    let o = r.build(&ctx, &["-q", "--platform", "linux/s390x"]).failed("another platform");
    assert!(o.stderr.contains("--platform linux/s390x"), "{}", o.stderr);
}

pub fn a_killed_build_is_swept_by_the_next() {
    let r = Root::new("killed", 12);
    let ctx = context(
        "killed",
        &[(
            "Containerfile",
            "FROM localhost/berth-test/busybox:1\nCOPY Containerfile /x\nRUN echo started && sleep 600\n",
        )],
    );
    let build = spawn(&mut r.command(&["build", "--no-cache", ctx.to_str().unwrap()]), None);
    build.wait_for_stdout("started");
    // SAFETY: our own child, by pid.
    unsafe { libc::kill(build.pid as i32, libc::SIGKILL) };
    let _ = build.wait(Duration::from_secs(30));
    let left = r.berth(&["ps", "-a", "-q"]).ok("ps").stdout;
    assert!(!left.trim().is_empty(), "the killed build's RUN container is still there");
    // The next build sweeps what the killed one left.
    std::fs::write(ctx.join("Containerfile"), "FROM localhost/berth-test/busybox:1\nRUN true\n").unwrap();
    r.build(&ctx, &["-q"]).ok("the next build");
    assert!(r.berth(&["ps", "-a", "-q"]).ok("ps").stdout.trim().is_empty(), "swept");
    let snapshots: Vec<String> = std::fs::read_dir(r.path.join("snapshots"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!snapshots.iter().any(|s| s.starts_with("build-")), "{snapshots:?}");
}
