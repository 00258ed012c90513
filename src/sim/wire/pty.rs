//! A pseudo-terminal for the KDCOM target, so a host can open it as a real serial port (the
//! `serialport` crate, `screen`, WinDbg-style `com:port=/dev/pts/N`) instead of a socket.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::pty::openpty;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};

/// The target's end of a pseudo-terminal, and the path a host opens.
pub struct Pty {
    /// Read and written by the simulated target.
    pub master: File,
    /// The device a host opens (`/dev/pts/N`), or the stable link to it.
    pub path: PathBuf,
    /// Kept open so the master never sees EOF/EIO between host sessions, as a real UART
    /// stays there whether or not a debugger has it open.
    _slave: OwnedFd,
    link: Option<PathBuf>,
}

impl Pty {
    /// Opens a pseudo-terminal in raw mode (no echo, no line editing, no CR/LF translation, as
    /// a serial line carrying binary KD packets needs). With `link`, a symbolic link there
    /// points to the device, so tests and users get a stable name.
    pub fn open(link: Option<&Path>) -> io::Result<Self> {
        let pair = openpty(None, None).map_err(io::Error::from)?;
        let mut termios = tcgetattr(&pair.slave).map_err(io::Error::from)?;
        cfmakeraw(&mut termios);
        tcsetattr(&pair.slave, SetArg::TCSANOW, &termios).map_err(io::Error::from)?;
        let device = nix::unistd::ttyname(&pair.slave).map_err(io::Error::from)?;
        if let Some(link) = link {
            match std::fs::symlink_metadata(link) {
                Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(link)?,
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a symbolic link", link.display()),
                    ))
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
            std::os::unix::fs::symlink(&device, link)?;
        }
        Ok(Self {
            master: File::from(pair.master),
            path: link.map_or(device, Path::to_path_buf),
            _slave: pair.slave,
            link: link.map(Path::to_path_buf),
        })
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Some(link) = &self.link {
            let _ = std::fs::remove_file(link);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn bytes_cross_the_pty_untranslated_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("ttyKD");
        let mut pty = Pty::open(Some(&link)).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let mut host = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&link)
            .unwrap();
        // CR, LF, ^C and 0xAA would all be mangled by a cooked terminal.
        let packet = [0x30, 0x30, 0x30, 0x30, b'\r', b'\n', 0x03, 0x7f, 0xAA];
        host.write_all(&packet).unwrap();
        let mut got = [0u8; 9];
        pty.master.read_exact(&mut got).unwrap();
        assert_eq!(got, packet);
        pty.master.write_all(&packet).unwrap();
        let mut back = [0u8; 9];
        host.read_exact(&mut back).unwrap();
        assert_eq!(back, packet);
        drop(pty);
        assert!(!link.exists(), "the link is removed with the pty");
    }
}
