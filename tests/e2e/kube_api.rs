//! The fake Kubernetes API server behaves like the real one for the
//! endpoints rollbot uses: proven with the real kubectl, with kube-rs, and
//! with raw HTTP for the error bodies.

use crate::support::fake_kube::{
    deployment, kubectl, parse_label_selector, seed_history, DeploymentController, FakeKube, Pace,
    POD_TEMPLATE_HASH, REVISION,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

const DEPLOY: &str = "/apis/apps/v1/namespaces/prod/deployments";

struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    fn new(fake: &FakeKube) -> Http {
        Http {
            base: fake.url(),
            client: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: &str, path: &str, ct: &str, body: Value) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(m, format!("{}{path}", self.base));
        if !body.is_null() {
            req = req.header("content-type", ct).body(body.to_string());
        }
        let resp = req.send().await.unwrap();
        let code = resp.status().as_u16();
        (code, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, "", Value::Null).await
    }
}

fn client(fake: &FakeKube) -> kube::Client {
    let config = kube::Config::new(fake.url().parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn assert_status(v: &Value, code: u16, reason: &str) {
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
}

#[tokio::test]
async fn create_get_list_and_409_already_exists() {
    let fake = FakeKube::standard().await;
    let http = Http::new(&fake);
    let (code, created) = http
        .send(
            "POST",
            DEPLOY,
            "application/json",
            deployment("web", "web:1", 3),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let m = &created["metadata"];
    assert_eq!(m["namespace"], "prod");
    assert_eq!(m["generation"], 1);
    assert!(m["uid"].as_str().is_some_and(|u| u.len() == 36), "{m}");
    assert!(m["creationTimestamp"].as_str().is_some());
    let rv1: u64 = m["resourceVersion"].as_str().unwrap().parse().unwrap();

    let (code, again) = http
        .send(
            "POST",
            DEPLOY,
            "application/json",
            deployment("web", "web:1", 3),
        )
        .await;
    assert_eq!(code, 409);
    assert_status(&again, 409, "AlreadyExists");
    assert_eq!(again["message"], "deployments.apps \"web\" already exists");
    assert_eq!(
        again["details"],
        json!({"name": "web", "group": "apps", "kind": "deployments"})
    );

    let (code, other) = http
        .send(
            "POST",
            DEPLOY,
            "application/json",
            deployment("api", "api:1", 1),
        )
        .await;
    assert_eq!(code, 201);
    let rv2: u64 = other["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1, "resourceVersion is a global increasing counter");

    let (code, got) = http.get(&format!("{DEPLOY}/web")).await;
    assert_eq!(code, 200);
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1"
    );
    let (code, missing) = http.get(&format!("{DEPLOY}/nope")).await;
    assert_eq!(code, 404);
    assert_status(&missing, 404, "NotFound");
    assert_eq!(missing["message"], "deployments.apps \"nope\" not found");

    let (code, list) = http.get(DEPLOY).await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "DeploymentList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "web"]);
    let (_, by_field) = http
        .get(&format!("{DEPLOY}?fieldSelector=metadata.name%3Dweb"))
        .await;
    assert_eq!(by_field["items"].as_array().unwrap().len(), 1);
    let (code, bad) = http
        .get(&format!("{DEPLOY}?fieldSelector=spec.replicas%3D3"))
        .await;
    assert_eq!(code, 400);
    assert_status(&bad, 400, "BadRequest");
}

#[tokio::test]
async fn label_selectors_match_like_the_api_server() {
    let fake = FakeKube::standard().await;
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "web", "tier": "back"})),
        ("c", json!({"app": "api"})),
    ] {
        let mut d = deployment(name, "x:1", 1);
        d["metadata"]["labels"] = labels;
        fake.create("deployments", "prod", d);
    }
    let http = Http::new(&fake);
    let cases = [
        ("app=web", "a,b"),
        ("app==web", "a,b"),
        ("app!=web", "c"),
        ("tier in (front,side)", "a"),
        ("tier notin (front)", "b,c"),
        ("tier", "a,b"),
        ("!tier", "c"),
        ("app=web,tier!=front", "b"),
        ("app in (web, api),!tier", "c"),
    ];
    for (sel, want) in cases {
        let q: String = serde_urlencoded::to_string([("labelSelector", sel)]).unwrap();
        let (code, list) = http.get(&format!("{DEPLOY}?{q}")).await;
        assert_eq!(code, 200, "{sel}: {list}");
        let got: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(got.join(","), want, "selector {sel:?}");
    }
    let (code, bad) = http
        .get(&format!("{DEPLOY}?labelSelector=tier%20in%20front"))
        .await;
    assert_eq!(code, 400, "{bad}");
    assert!(parse_label_selector("a in (b").is_err());
}

#[tokio::test]
async fn replace_with_a_stale_resource_version_is_a_conflict() {
    let fake = FakeKube::standard().await;
    let http = Http::new(&fake);
    let created = fake.create("deployments", "prod", deployment("web", "web:1", 2));
    let mut stale = created.clone();
    // Someone else writes in between.
    fake.bump("deployments", "prod", "web", |d| {
        d["spec"]["replicas"] = json!(5);
    });
    stale["spec"]["replicas"] = json!(3);
    let (code, body) = http
        .send(
            "PUT",
            &format!("{DEPLOY}/web"),
            "application/json",
            stale.clone(),
        )
        .await;
    assert_eq!(code, 409);
    assert_status(&body, 409, "Conflict");
    assert_eq!(
        body["message"],
        "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // With the fresh resourceVersion it goes through and bumps generation.
    let fresh = fake.get("deployments", "prod", "web").unwrap();
    stale["metadata"]["resourceVersion"] = fresh["metadata"]["resourceVersion"].clone();
    let (code, body) = http
        .send("PUT", &format!("{DEPLOY}/web"), "application/json", stale)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["replicas"], 3);
    assert_eq!(body["metadata"]["generation"], 3);
    assert_eq!(body["metadata"]["uid"], created["metadata"]["uid"]);
}

#[tokio::test]
async fn patches_json_merge_and_strategic() {
    let fake = FakeKube::standard().await;
    let http = Http::new(&fake);
    let mut d = deployment("web", "web:1", 2);
    d["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "proxy:1"}));
    fake.create("deployments", "prod", d);
    let path = format!("{DEPLOY}/web");

    // JSON patch with a passing test op.
    let (code, body) = http
        .send(
            "PATCH",
            &path,
            "application/json-patch+json",
            json!([
                {"op": "test", "path": "/spec/replicas", "value": 2},
                {"op": "replace", "path": "/spec/replicas", "value": 4},
            ]),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["replicas"], 4);
    assert_eq!(body["metadata"]["generation"], 2);

    // A failing test op is 422 and changes nothing.
    let rv = body["metadata"]["resourceVersion"].clone();
    let (code, body) = http
        .send(
            "PATCH",
            &path,
            "application/json-patch+json",
            json!([{"op": "test", "path": "/spec/replicas", "value": 2}, {"op": "replace", "path": "/spec/replicas", "value": 9}]),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_status(&body, 422, "Invalid");
    let now = fake.get("deployments", "prod", "web").unwrap();
    assert_eq!(now["metadata"]["resourceVersion"], rv);
    assert_eq!(now["spec"]["replicas"], 4);

    // A patch that produces an invalid object is 422 Invalid.
    let (code, body) = http
        .send(
            "PATCH",
            &path,
            "application/merge-patch+json",
            json!({"spec": "oops"}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_status(&body, 422, "Invalid");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Deployment.apps \"web\" is invalid: spec"),
        "{body}"
    );
    let (code, _) = http
        .send(
            "PATCH",
            &path,
            "application/merge-patch+json",
            json!({"spec": {"replicas": -1}}),
        )
        .await;
    assert_eq!(code, 422);

    // Merge patch: metadata only does not bump generation; null deletes.
    let (code, body) = http
        .send(
            "PATCH",
            &path,
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"team": "pay", "app": "web"}}}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["metadata"]["generation"], 2);
    let (_, body) = http
        .send(
            "PATCH",
            &path,
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"team": null}}}),
        )
        .await;
    assert_eq!(body["metadata"]["labels"], json!({"app": "web"}));

    // A merge patch carrying a stale resourceVersion is a conflict.
    let (code, body) = http
        .send(
            "PATCH",
            &path,
            "application/merge-patch+json",
            json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 1}}),
        )
        .await;
    assert_eq!(code, 409);
    assert_status(&body, 409, "Conflict");

    // Strategic merge: containers merge by name, like `kubectl set image`.
    let (code, body) = http
        .send(
            "PATCH",
            &path,
            "application/strategic-merge-patch+json",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let cs = &body["spec"]["template"]["spec"]["containers"];
    assert_eq!(cs[0]["image"], "web:2");
    assert_eq!(cs[0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(cs[1]["image"], "proxy:1");
    assert_eq!(body["metadata"]["generation"], 3);

    let (code, body) = http
        .send("PATCH", &path, "application/xml", json!({}))
        .await;
    assert_eq!(code, 415, "{body}");
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status() {
    let fake = FakeKube::standard().await;
    let http = Http::new(&fake);
    let rollouts = "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts";
    let rollout = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "paused": false},
        "status": {"phase": "Healthy"},
    });
    let (code, created) = http
        .send("POST", rollouts, "application/json", rollout)
        .await;
    assert_eq!(code, 201, "{created}");
    assert!(
        created.get("status").is_none(),
        "status is reset on create: {created}"
    );

    // Writing status through the main resource is ignored…
    let (_, body) = http
        .send(
            "PATCH",
            &format!("{rollouts}/web"),
            "application/merge-patch+json",
            json!({"spec": {"paused": true}, "status": {"abort": true}}),
        )
        .await;
    assert_eq!(body["spec"]["paused"], true);
    assert!(body.get("status").is_none(), "{body}");
    assert_eq!(body["metadata"]["generation"], 2);

    // …and writing spec through /status is ignored.
    let (code, body) = http
        .send(
            "PATCH",
            &format!("{rollouts}/web/status"),
            "application/merge-patch+json",
            json!({"spec": {"paused": false}, "status": {"abort": true}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["abort"], true);
    assert_eq!(body["spec"]["paused"], true);
    assert_eq!(
        body["metadata"]["generation"], 2,
        "status writes keep generation"
    );

    // Kinds without the subresource do not serve it.
    let vs = "/apis/networking.istio.io/v1beta1/namespaces/prod/virtualservices";
    let (code, _) = http
        .send(
            "POST",
            vs,
            "application/json",
            json!({"metadata": {"name": "web"}, "spec": {"hosts": ["web"]}}),
        )
        .await;
    assert_eq!(code, 201);
    let (code, _) = http.get(&format!("{vs}/web/status")).await;
    assert_eq!(code, 404);
    // Both served versions see the same object.
    let (code, v1) = http
        .get("/apis/networking.istio.io/v1/namespaces/prod/virtualservices/web")
        .await;
    assert_eq!(code, 200);
    assert_eq!(v1["apiVersion"], "networking.istio.io/v1");
}

#[tokio::test]
async fn rbac_denials_faults_and_the_request_log() {
    let fake = FakeKube::standard().await;
    let http = Http::new(&fake);
    fake.create("deployments", "prod", deployment("web", "web:1", 2));
    fake.deny("patch", "apps", "deployments");
    let (code, body) = http
        .send(
            "PATCH",
            &format!("{DEPLOY}/web"),
            "application/merge-patch+json",
            json!({"spec": {"paused": true}}),
        )
        .await;
    assert_eq!(code, 403);
    assert_status(&body, 403, "Forbidden");
    assert_eq!(
        body["message"],
        "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:rollbot:rollbot\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"prod\""
    );
    // Other verbs and subresources are still allowed.
    assert_eq!(http.get(&format!("{DEPLOY}/web")).await.0, 200);
    let (code, scale) = http
        .send(
            "PATCH",
            &format!("{DEPLOY}/web/scale"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 0}}),
        )
        .await;
    assert_eq!(code, 200, "{scale}");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 0);
    assert_eq!(
        fake.get("deployments", "prod", "web").unwrap()["spec"]["replicas"],
        0
    );
    fake.deny("list", "apps", "replicasets");
    let (code, body) = http.get("/apis/apps/v1/namespaces/prod/replicasets").await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "replicasets.apps is forbidden: User \"system:serviceaccount:rollbot:rollbot\" cannot list resource \"replicasets\" in API group \"apps\" in the namespace \"prod\""
    );

    // Two writes conflict, the third goes through.
    fake.create("deployments", "prod", deployment("api", "api:1", 1));
    fake.fail_next_writes("deployments", "api", 2);
    let mut codes = vec![];
    for _ in 0..3 {
        let before = fake.get("deployments", "prod", "api").unwrap();
        let (code, _) = http
            .send("PUT", &format!("{DEPLOY}/api"), "application/json", before)
            .await;
        codes.push(code);
    }
    assert_eq!(codes, [409, 409, 200]);

    let log = fake.requests();
    let first = &log[0];
    assert_eq!(first.method, "PATCH");
    assert_eq!(first.path, format!("{DEPLOY}/web"));
    assert_eq!(first.content_type, "application/merge-patch+json");
    assert_eq!(first.json(), json!({"spec": {"paused": true}}));
    assert_eq!(first.status, 403);
    assert_eq!(fake.writes().len(), 5);
}

#[tokio::test]
async fn kube_rs_reads_patches_and_leases() {
    let fake = FakeKube::standard().await;
    let c = client(&fake);
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "prod");
    fake.create("deployments", "prod", deployment("web", "web:1", 2));
    let d = deploys.get("web").await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    let list = deploys
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let patched = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().paused, Some(true));
    let err = deploys.get("nope").await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 404);
            assert_eq!(s.reason, "NotFound");
        }
        other => panic!("{other:?}"),
    }

    // Leases: create, conflict on stale replace, strategic and apply patches.
    let leases: Api<Lease> = Api::namespaced(c, "prod");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "rollbot"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15},
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let err = leases
        .create(&PostParams::default(), &lease)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"));
    let mut mine = created.clone();
    fake.bump("leases", "prod", "rollbot", |_| {});
    mine.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    let err = leases
        .replace("rollbot", &PostParams::default(), &mine)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"));
    leases
        .patch(
            "rollbot",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"leaseTransitions": 1}})),
        )
        .await
        .unwrap();
    let applied = leases
        .patch(
            "rollbot",
            &PatchParams::apply("rollbot"),
            &Patch::Apply(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "pod-b"}})),
        )
        .await
        .unwrap();
    let spec = applied.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(15));
}

#[tokio::test]
async fn deployment_controller_builds_history_and_rolls_out_at_its_pace() {
    let fake = FakeKube::standard().await;
    let ctl = DeploymentController::install(&fake, Pace::Immediate);
    let d = seed_history(
        &fake,
        "prod",
        "web",
        3,
        &[("web:1", "first"), ("web:2", "second"), ("web:3", "third")],
    );
    assert_eq!(d["metadata"]["annotations"][REVISION], "3");
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    let mut rss = fake.list("replicasets", "prod");
    rss.sort_by_key(|r| {
        r["metadata"]["annotations"][REVISION]
            .as_str()
            .unwrap()
            .to_string()
    });
    assert_eq!(rss.len(), 3);
    for (i, rs) in rss.iter().enumerate() {
        let a = &rs["metadata"]["annotations"];
        assert_eq!(a[REVISION], (i + 1).to_string());
        assert_eq!(
            a["kubernetes.io/change-cause"],
            ["first", "second", "third"][i]
        );
        let hash = rs["metadata"]["labels"][POD_TEMPLATE_HASH]
            .as_str()
            .unwrap();
        assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(
            rs["spec"]["template"]["metadata"]["labels"][POD_TEMPLATE_HASH],
            hash
        );
        assert_eq!(
            rs["metadata"]["ownerReferences"][0]["uid"],
            d["metadata"]["uid"]
        );
        assert_eq!(rs["spec"]["replicas"], if i == 2 { 3 } else { 0 });
    }

    // One replica per two GETs.
    ctl.set_pace(Pace::PerGets(2));
    fake.merge_patch(
        "deployments",
        "prod",
        "web",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:4"}]}}}}),
    );
    let http = Http::new(&fake);
    let mut seen = vec![];
    for _ in 0..8 {
        let (_, d) = http.get(&format!("{DEPLOY}/web")).await;
        seen.push(d["status"]["updatedReplicas"].as_i64().unwrap());
    }
    assert_eq!(seen, [0, 1, 1, 2, 2, 3, 3, 3]);
    let (_, d) = http.get(&format!("{DEPLOY}/web")).await;
    assert_eq!(d["status"]["replicas"], 3, "no old replicas left: {d}");
    assert_eq!(d["metadata"]["annotations"][REVISION], "4");

    // One replica per 200 ms, moving on with time (bounds leave room for a
    // busy machine).
    ctl.set_pace(Pace::Every(std::time::Duration::from_millis(200)));
    let started = std::time::Instant::now();
    fake.merge_patch(
        "deployments",
        "prod",
        "web",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:5"}]}}}}),
    );
    let mut seen = vec![];
    while started.elapsed() < std::time::Duration::from_secs(5) {
        let d = fake.get("deployments", "prod", "web").unwrap();
        let n = d["status"]["updatedReplicas"].as_i64().unwrap();
        let expected_at_most = (started.elapsed().as_millis() / 200) as i64;
        assert!(
            n <= expected_at_most.min(3),
            "{n} updated after {:?}",
            started.elapsed()
        );
        if seen.last() != Some(&n) {
            seen.push(n);
        }
        if n == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    assert_eq!(seen.last(), Some(&3), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(seen.len() >= 3, "progress in steps: {seen:?}");
    let d = fake.get("deployments", "prod", "web").unwrap();
    assert_eq!(d["status"]["availableReplicas"], 3);
}

#[tokio::test]
async fn kubectl_gets_patches_and_undoes_against_the_fake() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeKube::standard().await;
    DeploymentController::install(&fake, Pace::Immediate);
    seed_history(
        &fake,
        "prod",
        "web",
        2,
        &[("web:1", "first"), ("web:2", "second")],
    );

    let (ok, out, err) = kubectl(
        &fake,
        dir.path(),
        "prod",
        &["get", "deployment", "web", "-o", "json"],
    )
    .await;
    assert!(ok, "kubectl get failed: {err}");
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );
    // kubectl asked for aggregated discovery and protobuf, and fell back.
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.path == "/apis" && r.accept.contains("apidiscovery")));

    let (ok, out, err) = kubectl(&fake, dir.path(), "prod", &["get", "deployments"]).await;
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("web ")), "{out}");

    let (ok, out, err) = kubectl(
        &fake,
        dir.path(),
        "prod",
        &["get", "rs", "-l", "app=web", "-o", "name"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");

    let (ok, out, err) = kubectl(
        &fake,
        dir.path(),
        "prod",
        &[
            "patch",
            "deployment",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":4}}"#,
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("deployment.apps/web patched"), "{out}");
    let patch = fake.writes().pop().unwrap();
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.json(), json!({"spec": {"replicas": 4}}));

    let (ok, _, err) = kubectl(
        &fake,
        dir.path(),
        "prod",
        &[
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/spec/replicas","value":9}]"#,
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("The request is invalid") && err.contains("value did not match"),
        "{err}"
    );

    let (ok, out, err) = kubectl(
        &fake,
        dir.path(),
        "prod",
        &["rollout", "undo", "deployment/web"],
    )
    .await;
    assert!(ok, "kubectl rollout undo failed: {err}");
    assert!(out.contains("rolled back"), "{out}");
    let d = fake.get("deployments", "prod", "web").unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1"
    );
    assert_eq!(d["metadata"]["annotations"][REVISION], "3");

    fake.deny("patch", "apps", "deployments");
    let (ok, _, err) = kubectl(
        &fake,
        dir.path(),
        "prod",
        &["rollout", "undo", "deployment/web"],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("cannot patch resource \"deployments\" in API group \"apps\""),
        "{err}"
    );
}

#[tokio::test]
async fn kube_lease_manager_elects_one_leader_and_hands_over_on_release() {
    use kube_lease_manager::LeaseManagerBuilder;
    use std::time::Duration;
    let fake = FakeKube::standard().await;
    let manager = |id: &str| {
        LeaseManagerBuilder::new(client(&fake), "rollbot-leader")
            .with_namespace("prod")
            .with_identity(id)
            .with_duration(3)
            .with_grace(1)
            .build()
    };
    let a = manager("pod-a").await.unwrap();
    let b = manager("pod-b").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), a.changed()).await;
    assert!(matches!(got, Ok(Ok(true))), "pod-a leads: {got:?}");
    let lease = fake.get("leases", "prod", "rollbot-leader").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "pod-a");
    // pod-b waits while pod-a holds a fresh lease.
    let waited = tokio::time::timeout(Duration::from_millis(1500), b.changed()).await;
    assert!(waited.is_err(), "pod-b must not lead yet: {waited:?}");
    a.release().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), b.changed()).await;
    assert!(
        matches!(got, Ok(Ok(true))),
        "pod-b leads after release: {got:?}"
    );
    let lease = fake.get("leases", "prod", "rollbot-leader").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "pod-b");
    assert!(
        lease["spec"]["leaseTransitions"].as_i64().unwrap() >= 1,
        "{lease}"
    );
}

#[tokio::test]
async fn kube_rs_discovery_and_dynamic_objects_with_status() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    use kube::discovery::{Discovery, Scope};
    let fake = FakeKube::standard().await;
    let c = client(&fake);
    let discovery = Discovery::new(c.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"))
        .expect("Rollout is discovered");
    assert_eq!(ar.plural, "rollouts");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(caps
        .subresources
        .iter()
        .any(|(s, _)| s.plural == "rollouts/status" || s.plural == "status"));
    let vs = discovery.get("networking.istio.io").expect("istio group");
    assert_eq!(vs.preferred_version_or_latest(), "v1");

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(c, "prod", &ar);
    let mut ro = DynamicObject::new("web", &ar);
    ro.data = json!({"spec": {"replicas": 2, "paused": true}});
    api.create(&PostParams::default(), &ro).await.unwrap();
    let patched = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"abort": true}, "spec": {"paused": false}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["abort"], true);
    assert_eq!(
        patched.data["spec"]["paused"], true,
        "/status leaves spec alone"
    );
}

#[test]
fn strategic_merge_directives() {
    use crate::support::fake_kube::strategic_merge;
    let mut doc = json!({"spec": {"containers": [
        {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
        {"name": "proxy", "image": "p:1"},
    ], "nodeSelector": {"zone": "a", "disk": "ssd"}}});
    strategic_merge(
        &mut doc,
        &json!({"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "proxy"}],
            "containers": [
                {"name": "app", "env": [{"name": "Y", "value": "2"}]},
                {"name": "proxy", "$patch": "delete"},
                {"name": "debug", "image": "d:1"},
            ],
            "nodeSelector": {"$patch": "replace", "zone": "b"},
        }}),
    );
    assert_eq!(
        doc,
        json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "debug", "image": "d:1"},
        ], "nodeSelector": {"zone": "b"}}})
    );
}

#[tokio::test]
async fn watches_stream_changes_for_kube_rs_and_kubectl_rollout_status() {
    use futures_util::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeKube::standard().await;
    let ctl = DeploymentController::install(&fake, Pace::Immediate);
    seed_history(&fake, "prod", "web", 3, &[("web:1", "first")]);
    let deploys: Api<Deployment> = Api::namespaced(client(&fake), "prod");
    let list = deploys.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut events = deploys
        .watch(
            &WatchParams::default()
                .fields("metadata.name=web")
                .timeout(5),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    fake.merge_patch(
        "deployments",
        "prod",
        "web",
        json!({"spec": {"replicas": 4}}),
    );
    let ev = tokio::time::timeout(std::time::Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Modified(d) => assert_eq!(d.spec.unwrap().replicas, Some(4)),
        other => panic!("{other:?}"),
    }

    // kubectl rollout status follows a rollout moving one replica per 150 ms.
    ctl.set_pace(Pace::Every(std::time::Duration::from_millis(150)));
    fake.merge_patch(
        "deployments",
        "prod",
        "web",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}}),
    );
    let (ok, out, err) = kubectl(
        &fake,
        dir.path(),
        "prod",
        &["rollout", "status", "deployment/web", "--timeout=20s"],
    )
    .await;
    assert!(ok, "kubectl rollout status failed: {err}\n{out}");
    assert!(out.contains("new replicas have been updated"), "{out}");
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );
}
