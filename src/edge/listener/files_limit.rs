//! The open-files limit, which bounds how many connections one process can hold.

/// Descriptors kept for the listener, the state file, the runtime and logging.
const RESERVED_FILES: u64 = 64;

/// Raises the soft open-files limit to the hard one and returns how many connections fit
/// beside [`RESERVED_FILES`].
pub(crate) fn connection_capacity() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024 - RESERVED_FILES as usize;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit
        .rlim_cur
        .saturating_sub(RESERVED_FILES)
        .clamp(1, usize::MAX as u64) as usize
}
