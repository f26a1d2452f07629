//! A guest that pokes at the sandbox's walls, for the sandbox's tests.
//!
//! Usage: probe COMMAND [ARG]
//!   env                 print arguments and environment variables
//!   cat NAME            copy /in/NAME to /out/NAME, print its size and mtime
//!   read PATH           try to read PATH; prints "ok N" or "denied: ..." (exit 3)
//!   create PATH         try to create PATH; prints "ok" or "denied: ..." (exit 3)
//!   spin                loop forever
//!   recurse N           recurse N frames deep
//!   alloc MIB           allocate and touch MIB mebibytes
//!   write-out BYTES     write BYTES bytes to /out/big
//!   stdout BYTES        write BYTES bytes to stdout
//!   stderr BYTES        write BYTES bytes to stderr (lines numbered)
//!   clock-random        print the clocks and 16 random bytes
//!   nan                 print the bits of an arithmetic NaN result
//!   sleep SECS          sleep, then print the elapsed time the guest saw
//!   exit CODE           exit with CODE

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let command = args.get(1).map(String::as_str).unwrap_or("");
    let arg = args.get(2).cloned().unwrap_or_default();
    let number = || arg.parse::<u64>().unwrap_or(0);
    match command {
        "env" => {
            println!("args {:?}", &args[1..]);
            let mut vars: Vec<_> = std::env::vars().collect();
            vars.sort();
            for (k, v) in vars {
                println!("env {k}={v}");
            }
        }
        "cat" => {
            let data = match std::fs::read(format!("/in/{arg}")) {
                Ok(d) => d,
                Err(e) => return denied(&e),
            };
            let meta = std::fs::metadata(format!("/in/{arg}")).ok();
            let mtime = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos());
            println!("size {} mtime {:?}", data.len(), mtime);
            if let Err(e) = std::fs::write(format!("/out/{arg}"), &data) {
                return denied(&e);
            }
        }
        "read" => match std::fs::read(&arg) {
            Ok(d) => println!("ok {}", d.len()),
            Err(e) => return denied(&e),
        },
        "create" => match std::fs::write(&arg, b"x") {
            Ok(()) => println!("ok"),
            Err(e) => return denied(&e),
        },
        "spin" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "recurse" => println!("depth {}", recurse(number())),
        "alloc" => {
            let bytes = (number() as usize) << 20;
            let mut v = vec![0u8; bytes];
            for i in (0..bytes).step_by(4096) {
                v[i] = 1;
            }
            println!("allocated {}", std::hint::black_box(v).len());
        }
        "write-out" => {
            let mut f = match std::fs::File::create("/out/big") {
                Ok(f) => f,
                Err(e) => return denied(&e),
            };
            let chunk = vec![7u8; 65536];
            let mut left = number() as usize;
            while left > 0 {
                let n = left.min(chunk.len());
                if let Err(e) = f.write_all(&chunk[..n]) {
                    return denied(&e);
                }
                left -= n;
            }
        }
        "stdout" => {
            let out = vec![b'o'; number() as usize];
            if std::io::stdout().write_all(&out).is_err() {
                return ExitCode::from(4);
            }
        }
        "stderr" => {
            let mut err = std::io::stderr();
            let mut written = 0;
            let mut line = 0;
            while written < number() {
                let text = format!("line {line}\n");
                let _ = err.write_all(text.as_bytes());
                written += text.len() as u64;
                line += 1;
            }
        }
        "clock-random" => {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let start = std::time::Instant::now();
            let elapsed = start.elapsed().as_nanos();
            println!("wall {wall} elapsed {elapsed}");
            println!("random {:02x?}", random_bytes());
            let mut map = std::collections::HashMap::new();
            for i in 0..8 {
                map.insert(i, i);
            }
            // Iteration order depends on the random hash keys std draws.
            println!("hash order {:?}", map.keys().collect::<Vec<_>>());
        }
        "nan" => {
            let payload = std::hint::black_box(f32::from_bits(0x7fc0_0001));
            let sum = std::hint::black_box(payload + 1.0);
            println!("nan bits {:08x}", sum.to_bits());
        }
        "sleep" => {
            let start = std::time::Instant::now();
            std::thread::sleep(std::time::Duration::from_secs(number()));
            println!("slept {}", start.elapsed().as_secs());
        }
        "exit" => return ExitCode::from(number() as u8),
        _ => {
            eprintln!("probe: unknown command {command:?}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn denied(e: &std::io::Error) -> ExitCode {
    println!("denied: {e}");
    ExitCode::from(3)
}

fn recurse(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let pad = std::hint::black_box([n; 16]);
    1 + recurse(std::hint::black_box(n - 1)) + pad[3] - n
}

#[cfg(target_os = "wasi")]
fn random_bytes() -> [u8; 16] {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        fn random_get(buf: *mut u8, len: usize) -> u16;
    }
    let mut buf = [0u8; 16];
    // SAFETY: the buffer is valid for 16 writable bytes.
    let errno = unsafe { random_get(buf.as_mut_ptr(), buf.len()) };
    assert_eq!(errno, 0, "random_get failed");
    buf
}

#[cfg(not(target_os = "wasi"))]
fn random_bytes() -> [u8; 16] {
    [0; 16]
}
