//! A throwaway container registry for the push tests: Debian's
//! `docker-registry` (the CNCF distribution registry) on a free loopback
//! port, storing into a temporary folder, optionally behind htpasswd
//! authentication. Stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct Registry {
    /// `127.0.0.1:PORT`, as an image reference names the registry.
    pub address: String,
    child: Child,
    folder: TempDir,
}

impl Registry {
    /// Starts the registry and waits until it answers `/v2/`.
    pub fn start(binary: &Path, htpasswd: Option<&Path>) -> Registry {
        let folder = TempDir::new().unwrap();
        // A port the kernel just handed out and released: free unless
        // something takes it in the next milliseconds.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let auth = htpasswd.map_or(String::new(), |file| {
            format!(
                "auth:\n  htpasswd:\n    realm: xtask-tests\n    path: {}\n",
                file.display()
            )
        });
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n{auth}",
            folder.path().join("storage").display()
        );
        let config_path = folder.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(folder.path().join("registry.log")).unwrap();
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", binary.display()));
        let mut registry = Registry {
            address,
            child,
            folder,
        };
        registry.wait_until_it_answers();
        registry
    }

    fn wait_until_it_answers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the registry exited ({status}):\n{}", self.log());
            }
            if let Some(status) = self.status_of("/v2/") {
                assert!(
                    status == 200 || status == 401,
                    "the registry answered /v2/ with {status}"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the registry did not answer on {} within 15 s:\n{}",
            self.address,
            self.log()
        );
    }

    /// The HTTP status of a GET, or `None` when nothing answers.
    fn status_of(&self, path: &str) -> Option<u16> {
        let mut stream = TcpStream::connect(&self.address).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        )
        .ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.folder.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
