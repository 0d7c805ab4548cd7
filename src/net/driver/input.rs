//! The menu on stdin: lines read without blocking, commands run.

use super::workers::WorkerMsg;
use super::Driver;
use crate::cli::escape;
use crate::cli::menu::{self, MenuCommand};
use crate::core::Command;
use crate::net::stdin::{self};
use crate::storage::{self};
use log::info;
use mio::unix::SourceFd;
use std::io;

impl Driver {
    /// Reads the menu lines typed so far (never blocks); EOF ends the menu.
    pub(super) fn read_stdin(&mut self) {
        let Some(reader) = self.stdin.as_mut() else {
            return;
        };
        let got = reader.drain(io::stdin().lock(), menu::MAX_LINE);
        if got.too_long > 0 {
            println!("line too long (over {} bytes); ignored", menu::MAX_LINE);
        }
        for line in got.lines {
            self.on_menu_line(&line);
            if self.exit {
                return;
            }
        }
        if got.eof {
            info!("stdin closed; running without a menu");
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&stdin::STDIN_FD));
            self.stdin = None;
        }
    }

    /// Runs one menu line.
    pub(super) fn on_menu_line(&mut self, line: &str) {
        let now = self.now();
        match menu::parse(line) {
            MenuCommand::List => println!("{}", menu::render_list(&self.core.view(now))),
            MenuCommand::Peers => println!("{}", menu::render_peers(&self.core.view(now))),
            MenuCommand::Transfers => {
                println!("{}", menu::render_transfers(&self.core.view(now)))
            }
            MenuCommand::Help => println!("{}", menu::HELP),
            MenuCommand::Exit => {
                println!("saving and exiting");
                self.exit = true;
            }
            // A destination is checked first (off the loop: it may be on a
            // slow disk), so a refusal comes before any download.
            MenuCommand::Core(Command::Get {
                file,
                dest: Some(dest),
                force,
            }) => {
                let storage_dir = self.settings.dir.clone();
                let _ = self.worker_tx.send(Box::new(move || {
                    let checked = storage::check_dest(&dest, &storage_dir, force);
                    let cmd = Command::Get {
                        file,
                        dest: Some(dest),
                        force,
                    };
                    WorkerMsg::DestChecked(cmd, checked)
                }));
            }
            MenuCommand::Core(cmd) => self.core.on_command(now, cmd),
            MenuCommand::Nothing => {}
            MenuCommand::Invalid(hint) => escape::say(&hint),
        }
        self.apply_effects();
    }
}
