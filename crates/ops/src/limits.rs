//! This process's open-file limit: read by `doctor`, raised by the commands that hold many
//! sockets (`serve`, `demo`, `sim`). One place for the `getrlimit`/`setrlimit` calls.

/// `RLIMIT_NOFILE` of this process: (soft, hard).
pub fn open_files() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft open-file limit to the hard one and returns the soft limit then in force
/// (1024, the usual default, if it cannot even be read): every viewer is a descriptor.
pub fn raise_open_files() -> u64 {
    let Ok((soft, hard)) = open_files() else { return 1024 };
    if soft >= hard {
        return soft;
    }
    let raised = libc::rlimit { rlim_cur: hard, rlim_max: hard };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        hard
    } else {
        soft
    }
}
