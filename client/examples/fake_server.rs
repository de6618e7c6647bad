//! Runs the client's fake server (MICA, B-tree, record) until killed, for trying the `naam`
//! CLI and `naam-bench ycsb` without a deployment:
//!
//! ```sh
//! cargo run -p naam-client --features fake-server --example fake_server
//! naam --server 127.0.0.1:BASE get foo
//! ```

fn main() -> std::io::Result<()> {
    let fake = naam_client::fake::FakeServer::start_apps(8)?;
    println!("data base {} control {}", fake.data, fake.control);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
