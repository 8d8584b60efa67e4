//! End-to-end tests through the binary, the HTTP endpoints and the store.
//! One test binary with modules, so the dependency tree is linked once.

#[path = "../support/mod.rs"]
mod support;

mod argo_rollouts;
mod audit_cli;
mod backends;
mod before_after;
mod capability;
mod cascade;
mod check_config;
mod checks;
mod controller;
mod demo;
mod demo_cascade;
mod deploy;
mod discord;
mod dry_run;
mod exec;
mod failover;
mod failover_slack;
mod fallback;
mod fencing;
mod freeze_after_rollback;
mod gates;
mod handover;
mod incident_comms;
mod istio;
mod kube_api;
mod kubernetes;
mod layout;
mod leader;
mod leader_label;
mod migrations;
mod never_hang;
mod postgres_store;
mod postgres_tls;
mod readme;
mod replay;
mod report;
mod serve;
mod slack;
mod store_startup;
mod stuck;
mod unleash;
mod verify_checks;
