//! A tiny instrumented service for Prometheus to scrape: canary and baseline
//! counters (`http_requests_total`, `http_request_duration_seconds_bucket`)
//! that grow with time at configured rates. Listens on 127.0.0.1, stops on drop.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
pub struct TrackRates {
    pub requests_per_sec: f64,
    pub error_ratio: f64,
}

pub struct App {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn render(service: &str, elapsed: f64, baseline: TrackRates, canary: TrackRates) -> String {
    let mut t = String::from("# TYPE http_requests_total counter\n");
    let mut b = String::from("# TYPE http_request_duration_seconds histogram\n");
    for (track, r) in [("baseline", baseline), ("canary", canary)] {
        let total = (r.requests_per_sec * elapsed).floor();
        let errors = (total * r.error_ratio).floor();
        t.push_str(&format!(
            "http_requests_total{{service=\"{service}\",track=\"{track}\",code=\"200\"}} {}\n",
            total - errors
        ));
        t.push_str(&format!("http_requests_total{{service=\"{service}\",track=\"{track}\",code=\"500\"}} {errors}\n"));
        for (le, share) in [("0.1", 0.9), ("0.5", 0.99), ("+Inf", 1.0)] {
            b.push_str(&format!("http_request_duration_seconds_bucket{{service=\"{service}\",track=\"{track}\",le=\"{le}\"}} {}\n", (total * share).floor()));
        }
    }
    t + &b
}

impl App {
    pub fn start(service: &str, baseline: TrackRates, canary: TrackRates) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let service = service.to_string();
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            // Bounded: ends when the App is dropped, and after 10 minutes at most.
            while !flag.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(600) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).ok();
                        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                        let mut buf = [0u8; 2048];
                        let _ = s.read(&mut buf);
                        let body =
                            render(&service, started.elapsed().as_secs_f64(), baseline, canary);
                        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        App {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
