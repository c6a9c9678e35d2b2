//! The ImageService against Debian's docker-registry on loopback: pulls (with and without
//! credentials), status, lists, removal and the store's usage.

use berth_cri::proto as pb;
use berth_testkit::image::{Compression, Layer, LayerBuilder, OciLayout};
use berth_testkit::registry::{skopeo_push, Registry};
use tonic::Code;

use crate::support::*;

/// A registry (basic auth when given) holding `repo:tag`, a one-file image over busybox.
fn registry_with_image(what: &str, auth: Option<(&str, &str)>, repo: &str) -> (Registry, String) {
    let dir = suite().dir.join(unique(what));
    let registry = Registry::start(&dir.join("registry"), auth).expect("start docker-registry");
    let mut layout = OciLayout::create(&dir.join("layout")).unwrap();
    let mut marker = LayerBuilder::new();
    marker.file("pulled", 0o644, what.as_bytes());
    let img = layout
        .image(
            &[
                Layer { tar: busybox_layer(&dir), compression: Compression::Gzip },
                Layer { tar: marker.finish(), compression: Compression::Gzip },
            ],
            serde_json::json!({"User": "1234:5678"}),
            "amd64",
        )
        .unwrap();
    layout.tag("v1", &img.manifest_descriptor).unwrap();
    let dest = format!("{}/{repo}:v1", registry.addr());
    let creds = auth.map(|(u, p)| format!("{u}:{p}"));
    skopeo_push(&dir.join("layout"), "v1", &dest, false, None, creds.as_deref()).expect("skopeo push");
    (registry, dest)
}

fn image_status(name: &str) -> Option<pb::Image> {
    block(cri().images.image_status(pb::ImageStatusRequest {
        image: Some(pb::ImageSpec { image: name.into(), ..Default::default() }),
        verbose: false,
    }))
    .expect("ImageStatus")
    .into_inner()
    .image
}

pub fn pull_status_list_remove() {
    let (_registry, name) = registry_with_image("plain", None, "berthd/plain");
    assert!(image_status(&name).is_none(), "the image is there before the pull");
    let image_ref = block(cri().images.pull_image(pb::PullImageRequest {
        image: Some(pb::ImageSpec { image: name.clone(), ..Default::default() }),
        ..Default::default()
    }))
    .expect("PullImage")
    .into_inner()
    .image_ref;
    assert!(image_ref.starts_with("sha256:") && image_ref.len() == 71, "{image_ref}");
    let img = image_status(&name).expect("the pulled image");
    assert_eq!(img.id, image_ref);
    assert!(img.repo_tags.contains(&name), "{img:?}");
    assert!(img.repo_digests.iter().any(|d| d.contains("@sha256:")), "{img:?}");
    assert_eq!(img.uid, Some(pb::Int64Value { value: 1234 }));
    assert!(img.size > 0);
    // By its ID too, as kubelet passes it back.
    assert_eq!(image_status(&image_ref).unwrap().id, image_ref);
    let listed = block(cri().images.list_images(pb::ListImagesRequest { filter: None })).unwrap().into_inner().images;
    assert!(
        listed.iter().any(|i| i.id == image_ref)
            && listed.iter().any(|i| i.repo_tags.iter().any(|t| t.ends_with("busybox:1")))
    );
    let filtered = block(cri().images.list_images(pb::ListImagesRequest {
        filter: Some(pb::ImageFilter { image: Some(pb::ImageSpec { image: name.clone(), ..Default::default() }) }),
    }))
    .unwrap()
    .into_inner()
    .images;
    assert_eq!(filtered.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), vec![image_ref.clone()]);

    // A pod's container runs it, as the image's user.
    let pod = Pod::run(pod_config("pulled"));
    let mut c = container_config("from-registry", "exec sleep 1000");
    c.image = Some(pb::ImageSpec { image: image_ref.clone(), ..Default::default() });
    let id = pod.start(c);
    assert_eq!(exec(&id, &["cat", "/pulled"]).1, "plain");
    assert_eq!(exec(&id, &["id", "-u"]).1.trim(), "1234");
    // In use: not removed.
    let e = block(cri().images.remove_image(pb::RemoveImageRequest {
        image: Some(pb::ImageSpec { image: image_ref.clone(), ..Default::default() }),
    }))
    .expect_err("removing an image in use");
    assert_ne!(e.code(), Code::Ok);
    drop(pod);

    let fs = block(cri().images.image_fs_info(pb::ImageFsInfoRequest {})).unwrap().into_inner();
    let store = &fs.image_filesystems[0];
    assert_eq!(store.fs_id.as_ref().unwrap().mountpoint, suite().root.display().to_string());
    assert!(store.used_bytes.as_ref().unwrap().value > 0 && store.inodes_used.as_ref().unwrap().value > 0);

    // Removed by several callers at once (kubelet's image GC may race a user), then once more
    // when it is gone: every call succeeds.
    let request =
        || pb::RemoveImageRequest { image: Some(pb::ImageSpec { image: image_ref.clone(), ..Default::default() }) };
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (mut client, req) = (cri(), request());
            suite().rt.spawn(async move { client.images.remove_image(req).await })
        })
        .collect();
    for call in calls {
        block(call).unwrap().expect("RemoveImage, concurrently");
    }
    block(cri().images.remove_image(request())).expect("RemoveImage of an image already removed");
    assert!(image_status(&name).is_none());
    assert!(image_status(&image_ref).is_none());
}

pub fn pull_with_credentials() {
    let (_registry, name) = registry_with_image("private", Some(("kube", "s3cret")), "berthd/private");
    let pull = |auth: Option<pb::AuthConfig>| {
        block(cri().images.pull_image(pb::PullImageRequest {
            image: Some(pb::ImageSpec { image: name.clone(), ..Default::default() }),
            auth,
            sandbox_config: None,
        }))
    };
    let e = pull(None).expect_err("a pull without credentials");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = pull(Some(pb::AuthConfig { username: "kube".into(), password: "wrong".into(), ..Default::default() }))
        .expect_err("a pull with a wrong password");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = pull(Some(pb::AuthConfig { auth: "not base64!".into(), ..Default::default() }))
        .expect_err("a pull with a broken auth field");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("auth.auth"), "{e:?}");
    // user:password in base64, as kubelet passes docker config credentials.
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("kube:s3cret");
    let id = pull(Some(pb::AuthConfig { auth, ..Default::default() })).expect("a pull with credentials").into_inner();
    block(cri().images.remove_image(pb::RemoveImageRequest {
        image: Some(pb::ImageSpec { image: id.image_ref, ..Default::default() }),
    }))
    .expect("RemoveImage");
}
