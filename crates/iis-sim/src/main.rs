//! Starts a FastCGI program the way IIS does in its default NamedPipe mode, for the Windows
//! suite (run under Wine), and relays one TCP connection to it so that a test on the Linux
//! side can speak FastCGI to it:
//!
//! ```text
//! iis-sim [--tcp | --server-first | --blocking-pipe | --client-free] PORT PROGRAM [ARGS...]
//! ```
//!
//! With `--client-free`, nothing connects the client end: iis-sim prints the pipe's name
//! (`iis-sim: the pipe NAME waits for a client`) and waits for the program, so that another
//! client (`wfcgi request --connect \\.\pipe\...`) can connect to it.
//!
//! With `--server-first`, the client end connects 3 s after the program started, so that the
//! program waits for it in `ConnectNamedPipe` (the other order than IIS's usual).
//!
//! With `--blocking-pipe`, the pipe is created without FILE_FLAG_OVERLAPPED (IIS opens it
//! overlapped; other tools may not), so that the program falls back to blocking I/O.
//!
//! With `--tcp`, IIS's Tcp protocol mode instead: a listening socket on 127.0.0.1:PORT
//! (inheritable) is PROGRAM's standard input, and the test connects to it directly.
//!
//! It creates a duplex named pipe instance (overlapped, inheritable) with raw Win32 calls (a
//! pipe made by tokio's `ServerOptions` would be bound to this process's completion port and
//! break the child), connects its client end first, as IIS does, and starts PROGRAM with
//! `CreateProcessW`: standard input the pipe's server end, standard output and error
//! `INVALID_HANDLE_VALUE`, in a job that ends it (and whatever it started) when iis-sim ends, as
//! IIS's FastCGI processes end with their worker process. Then it listens on 127.0.0.1:PORT and relays each TCP connection
//! to a pipe connection, copying bytes both ways. When the program closes the pipe connection
//! (after a request without FCGI_KEEP_CONN), the TCP connection is closed and the next one
//! gets a new pipe connection (the program must have disconnected and reconnected its end, as
//! libfcgi does). When the TCP client closes and the program keeps its end open for 2 s, the
//! pipe is closed (the program sees the end of its connection, as when IIS recycles it), and
//! iis-sim waits for the program and exits with its exit code. A line `shutdown` on its
//! standard input signals the event it passed as `_FCGI_SHUTDOWN_EVENT_` (IIS's request to
//! finish and exit).
//! Facts behind each step: ../shared/reference/windows-under-wine.md.

use std::process::ExitCode;

fn main() -> ExitCode {
    #[cfg(windows)]
    return windows::main();
    #[cfg(not(windows))]
    {
        eprintln!("iis-sim: runs on Windows only (the test suite runs it under Wine)");
        ExitCode::from(2)
    }
}

#[cfg(windows)]
mod windows {
    use std::os::windows::io::AsRawSocket;
    use std::process::ExitCode;

    use tokio::io::AsyncWriteExt;
    use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeClient};
    use windows_sys::Win32::Foundation::{
        CloseHandle, SetHandleInformation, HANDLE, HANDLE_FLAG_INHERIT, INVALID_HANDLE_VALUE,
    };
    use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;
    use windows_sys::Win32::Storage::FileSystem::{FILE_FLAG_OVERLAPPED, PIPE_ACCESS_DUPLEX};
    use windows_sys::Win32::System::Pipes::{
        CreateNamedPipeW, PIPE_READMODE_BYTE, PIPE_TYPE_BYTE, PIPE_WAIT,
    };
    use windows_sys::Win32::System::Threading::{
        CreateEventW, CreateProcessW, GetExitCodeProcess, SetEvent, WaitForSingleObject, INFINITE,
        PROCESS_INFORMATION, STARTF_USESTDHANDLES, STARTUPINFOW,
    };

    fn wide(text: &str) -> Vec<u16> {
        text.encode_utf16().chain(std::iter::once(0)).collect()
    }

    fn last_error(what: &str) -> String {
        format!("{what}: {}", std::io::Error::last_os_error())
    }

    /// A command line as `CommandLineToArgvW` splits it back (enough for paths and flags).
    fn command_line(args: &[String]) -> String {
        args.iter()
            .map(|a| {
                if a.is_empty() || a.contains([' ', '\t', '"']) {
                    format!("\"{}\"", a.replace('"', "\\\""))
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn inheritable() -> SECURITY_ATTRIBUTES {
        SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: std::ptr::null_mut(),
            bInheritHandle: 1,
        }
    }

    /// IIS's shutdown request: an inheritable manual-reset event, its handle's decimal value in
    /// the environment the program inherits. A line "shutdown" on iis-sim's stdin sets it.
    fn shutdown_event() -> Result<(), String> {
        let inherit = inheritable();
        // SAFETY: `inherit` is valid for the call; the event has no name.
        let event: HANDLE = unsafe { CreateEventW(&inherit, 1, 0, std::ptr::null()) };
        if event.is_null() {
            return Err(last_error("CreateEventW"));
        }
        std::env::set_var("_FCGI_SHUTDOWN_EVENT_", (event as usize).to_string());
        let event = event as usize;
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                if line.map(|l| l.trim() == "shutdown").unwrap_or(false) {
                    // SAFETY: the event handle stays open for iis-sim's life.
                    unsafe { SetEvent(event as HANDLE) };
                    println!("iis-sim: signalled the shutdown event");
                }
            }
        });
        Ok(())
    }

    /// Starts `program` as IIS does: `stdin` its standard input, no standard output or error,
    /// handles inherited. The process handle, as a number (to cross threads).
    fn start(program: &[String], stdin: HANDLE) -> Result<usize, String> {
        let mut cmdline = wide(&command_line(program));
        // SAFETY: STARTUPINFOW and PROCESS_INFORMATION are plain data; zero is valid for both.
        let mut startup: STARTUPINFOW = unsafe { std::mem::zeroed() };
        startup.cb = std::mem::size_of::<STARTUPINFOW>() as u32;
        startup.dwFlags = STARTF_USESTDHANDLES;
        startup.hStdInput = stdin;
        startup.hStdOutput = INVALID_HANDLE_VALUE;
        startup.hStdError = INVALID_HANDLE_VALUE;
        // SAFETY: as above.
        let mut process: PROCESS_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: `cmdline` is a writable NUL-terminated buffer, as CreateProcessW requires;
        // the structures are valid for the call.
        let created = unsafe {
            CreateProcessW(
                std::ptr::null(),
                cmdline.as_mut_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                1,
                0,
                std::ptr::null(),
                std::ptr::null(),
                &startup,
                &mut process,
            )
        };
        if created == 0 {
            return Err(last_error("CreateProcessW"));
        }
        // SAFETY: the thread handle is not used.
        unsafe { CloseHandle(process.hThread) };
        end_with_iis_sim(process.hProcess)?;
        Ok(process.hProcess as usize)
    }

    /// Puts the program (and what it starts) in a job that ends with iis-sim, as IIS's FastCGI
    /// processes end with their worker process: a test that kills iis-sim leaves nothing
    /// running. The job's handle stays open for iis-sim's life; its end closes the job.
    fn end_with_iis_sim(process: HANDLE) -> Result<(), String> {
        use windows_sys::Win32::System::JobObjects::{
            AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
            SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
            JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
        };
        // SAFETY: no attributes, no name: an anonymous job, its handle not inherited.
        let job = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if job.is_null() {
            return Err(last_error("CreateJobObjectW"));
        }
        // SAFETY: plain data; zero is a valid value.
        let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        // SAFETY: `limits` is the structure this class takes, with its size.
        let set = unsafe {
            SetInformationJobObject(
                job,
                JobObjectExtendedLimitInformation,
                (&raw const limits).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        };
        if set == 0 {
            return Err(last_error("SetInformationJobObject"));
        }
        // SAFETY: both handles are valid; the job handle is deliberately never closed.
        if unsafe { AssignProcessToJobObject(job, process) } == 0 {
            return Err(last_error("AssignProcessToJobObject"));
        }
        Ok(())
    }

    /// Waits for the program to exit: its exit code.
    async fn exit_code(child: usize) -> Result<u32, String> {
        tokio::task::spawn_blocking(move || {
            let child = child as HANDLE;
            let mut code = 0u32;
            // SAFETY: `child` is the process handle CreateProcessW returned, owned here.
            unsafe {
                WaitForSingleObject(child, INFINITE);
                GetExitCodeProcess(child, &mut code);
                CloseHandle(child);
            }
            code
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// The client end again, once the program has disconnected and reconnected its end
    /// (ERROR_PIPE_BUSY until then).
    async fn open_again(name: &str) -> Result<NamedPipeClient, String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match ClientOptions::new().open(name) {
                Ok(client) => return Ok(client),
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => return Err(format!("the program did not reconnect {name}: {e}")),
            }
        }
    }

    pub(crate) fn main() -> ExitCode {
        let mut args: Vec<String> = std::env::args().skip(1).collect();
        let tcp = args.first().is_some_and(|a| a == "--tcp");
        if tcp {
            args.remove(0);
        }
        let server_first = args.first().is_some_and(|a| a == "--server-first");
        if server_first {
            args.remove(0);
        }
        let blocking = args.first().is_some_and(|a| a == "--blocking-pipe");
        if blocking {
            args.remove(0);
        }
        let client_free = args.first().is_some_and(|a| a == "--client-free");
        if client_free {
            args.remove(0);
        }
        let (Some(port), Some(_)) = (
            args.first().and_then(|p| p.parse::<u16>().ok()),
            args.get(1),
        ) else {
            eprintln!(
                "usage: iis-sim [--tcp | --server-first | --blocking-pipe | --client-free] PORT PROGRAM [ARGS...]"
            );
            return ExitCode::from(2);
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let result = match shutdown_event() {
            Ok(()) if tcp => runtime.block_on(tcp_mode(port, &args[1..])),
            Ok(()) if client_free => {
                runtime.block_on(pipe_mode(port, &args[1..], Client::Free, false))
            }
            Ok(()) => runtime.block_on(pipe_mode(
                port,
                &args[1..],
                if server_first {
                    Client::After
                } else {
                    Client::First
                },
                blocking,
            )),
            Err(e) => Err(e),
        };
        match result {
            Ok(code) => {
                println!("iis-sim: the program exited with {code}");
                ExitCode::from(code as u8)
            }
            Err(e) => {
                eprintln!("iis-sim: {e}");
                ExitCode::from(2)
            }
        }
    }

    /// IIS's Tcp mode: the listening socket is the program's standard input.
    async fn tcp_mode(port: u16, program: &[String]) -> Result<u32, String> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("listening on 127.0.0.1:{port}: {e}"))?;
        let socket = listener.as_raw_socket() as HANDLE;
        // SAFETY: `socket` is the listener's handle, open for the call. Rust makes sockets
        // non-inheritable; IIS's is inherited.
        if unsafe { SetHandleInformation(socket, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT) } == 0 {
            return Err(last_error("SetHandleInformation"));
        }
        let child = start(program, socket)?;
        println!("iis-sim: listening on 127.0.0.1:{port} (Tcp mode: the program accepts)");
        let code = exit_code(child).await;
        // Kept open until the program ends (as IIS keeps its listening socket).
        drop(listener);
        code
    }

    /// Who connects the pipe's client end, and when.
    #[derive(PartialEq, Eq)]
    enum Client {
        /// iis-sim, before the program starts (IIS's order).
        First,
        /// iis-sim, 3 s after the program started (`--server-first`).
        After,
        /// Someone else (`--client-free`).
        Free,
    }

    /// IIS's default NamedPipe mode, with each TCP connection relayed to a pipe connection.
    async fn pipe_mode(
        port: u16,
        program: &[String],
        client: Client,
        blocking: bool,
    ) -> Result<u32, String> {
        let name = format!(r"\\.\pipe\wfcgi-iis-sim-{}", std::process::id());
        // IIS also tells the process the pipe's name (nothing here needs it; wfastcgi logs it).
        std::env::set_var("_FCGI_X_PIPE_", &name);
        let name_w = wide(&name);
        let inherit = inheritable();
        // SAFETY: `name_w` is NUL-terminated and `inherit` valid for the call.
        let server: HANDLE = unsafe {
            CreateNamedPipeW(
                name_w.as_ptr(),
                if blocking {
                    PIPE_ACCESS_DUPLEX
                } else {
                    PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED
                },
                PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT,
                1,
                65536,
                65536,
                0,
                &inherit,
            )
        };
        if server == INVALID_HANDLE_VALUE {
            return Err(last_error("CreateNamedPipeW"));
        }
        // IIS connects its end before the process reads: ConnectNamedPipe then answers
        // ERROR_PIPE_CONNECTED. With --server-first the program waits in ConnectNamedPipe
        // (ERROR_IO_PENDING, then completion) until the client comes a moment later.
        let client_first = if client != Client::First {
            None
        } else {
            Some(
                ClientOptions::new()
                    .open(&name)
                    .map_err(|e| format!("opening the client end of {name}: {e}"))?,
            )
        };
        let started = start(program, server);
        // SAFETY: our copy of the server end is not used again (the child has its own).
        unsafe { CloseHandle(server) };
        if client == Client::Free {
            println!("iis-sim: the pipe {name} waits for a client");
            return exit_code(started?).await;
        }
        let client = match client_first {
            Some(client) => client,
            None => {
                // Long enough for the program to be waiting in ConnectNamedPipe.
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                open_again(&name).await?
            }
        };
        let exited = exit_code(started?);
        tokio::pin!(exited);

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("listening on 127.0.0.1:{port}: {e}"))?;
        println!("iis-sim: listening on 127.0.0.1:{port}");
        let mut client = Some(client);
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted.map_err(|e| format!("accept: {e}"))?,
                // The program ended on its own (the shutdown event, a crash).
                code = &mut exited => return code,
            };
            tcp.set_nodelay(true).ok();
            let pipe = match client.take() {
                Some(pipe) => pipe,
                None => open_again(&name).await?,
            };
            let (mut pipe_rd, mut pipe_wr) = tokio::io::split(pipe);
            let (mut tcp_rd, mut tcp_wr) = tcp.into_split();
            let program_closed = {
                let from_program = tokio::io::copy(&mut pipe_rd, &mut tcp_wr);
                tokio::pin!(from_program);
                tokio::select! {
                    // The client is done: if the program closes its end now (it does after a
                    // request without FCGI_KEEP_CONN), it expects another connection; if not,
                    // this was the last, and closing the pipe ends the program.
                    _ = tokio::io::copy(&mut tcp_rd, &mut pipe_wr) => {
                        tokio::time::timeout(std::time::Duration::from_secs(2), &mut from_program)
                            .await
                            .is_ok()
                    }
                    _ = &mut from_program => true,
                }
            };
            let _ = tcp_wr.shutdown().await;
            // Closing the client end ends the program's connection.
            drop((pipe_rd, pipe_wr, tcp_rd, tcp_wr));
            if !program_closed {
                break;
            }
            println!("iis-sim: the program closed the pipe connection; relaying the next");
        }
        exited.await
    }
}
