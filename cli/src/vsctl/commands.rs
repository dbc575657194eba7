//! The command table: every ovs-vsctl command with its argument counts,
//! accepted options (OVS's option-string format) and implementation.
use super::{
    bridge_commands as br, config_commands as cfg,
    context::{CmdResult, Context},
    db_commands as db, show,
};

/// Whether a command may write to the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    ReadOnly,
    ReadWrite,
}

pub type RunFn = fn(&mut Context) -> CmdResult;

#[derive(Debug)]
pub struct CommandSyntax {
    pub name: &'static str,
    pub min_args: usize,
    pub max_args: usize,
    /// What `--help` shows for the arguments.
    pub arguments: &'static str,
    /// Comma-separated options, "--name" or "--name=" (takes a value).
    pub options: &'static str,
    pub mode: Mode,
    pub run: Option<RunFn>,
}

const MANY: usize = usize::MAX;
use Mode::{ReadOnly as RO, ReadWrite as RW};

macro_rules! cmd {
    ($name:expr, $min:expr, $max:expr, $args:expr, $run:expr, $opts:expr, $mode:expr) => {
        CommandSyntax {
            name: $name,
            min_args: $min,
            max_args: $max,
            arguments: $args,
            options: $opts,
            mode: $mode,
            run: $run,
        }
    };
}

pub static COMMANDS: &[CommandSyntax] = &[
    cmd!("init", 0, 0, "", Some(cfg::cmd_init), "", RW),
    cmd!("show", 0, 0, "", Some(show::cmd_show), "", RO),
    cmd!("emer-reset", 0, 0, "", Some(cfg::cmd_emer_reset), "", RW),
    // Bridges.
    cmd!("add-br", 1, 3, "NEW-BRIDGE [PARENT] [NEW-VLAN]", Some(br::cmd_add_br), "--may-exist", RW),
    cmd!("del-br", 1, 1, "BRIDGE", Some(br::cmd_del_br), "--if-exists", RW),
    cmd!("list-br", 0, 0, "", Some(br::cmd_list_br), "--real,--fake", RO),
    cmd!("br-exists", 1, 1, "BRIDGE", Some(br::cmd_br_exists), "", RO),
    cmd!("br-to-vlan", 1, 1, "BRIDGE", Some(br::cmd_br_to_vlan), "", RO),
    cmd!("br-to-parent", 1, 1, "BRIDGE", Some(br::cmd_br_to_parent), "", RO),
    cmd!("br-set-external-id", 2, 3, "BRIDGE KEY [VALUE]", Some(br::cmd_br_set_external_id), "", RW),
    cmd!("br-get-external-id", 1, 2, "BRIDGE [KEY]", Some(br::cmd_br_get_external_id), "", RO),
    // Ports.
    cmd!("list-ports", 1, 1, "BRIDGE", Some(br::cmd_list_ports), "", RO),
    cmd!("add-port", 2, MANY, "BRIDGE NEW-PORT [COLUMN[:KEY]=VALUE]...", Some(br::cmd_add_port), "--may-exist", RW),
    cmd!("del-port", 1, 2, "[BRIDGE] PORT|IFACE", Some(br::cmd_del_port), "--if-exists,--with-iface", RW),
    cmd!("port-to-br", 1, 1, "PORT", Some(br::cmd_port_to_br), "", RO),
    // Bonds.
    cmd!(
        "add-bond",
        4,
        MANY,
        "BRIDGE BOND IFACE... [COLUMN[:KEY]=VALUE]...",
        Some(br::cmd_add_bond),
        "--may-exist,--fake-iface",
        RW
    ),
    cmd!("add-bond-iface", 2, 2, "BOND IFACE", Some(br::cmd_add_bond_iface), "--may-exist", RW),
    cmd!("del-bond-iface", 1, 2, "[BOND] IFACE", Some(br::cmd_del_bond_iface), "--if-exists", RW),
    // Interfaces.
    cmd!("list-ifaces", 1, 1, "BRIDGE", Some(br::cmd_list_ifaces), "", RO),
    cmd!("iface-to-br", 1, 1, "IFACE", Some(br::cmd_iface_to_br), "", RO),
    // Controllers.
    cmd!("get-controller", 1, 1, "BRIDGE", Some(cfg::cmd_get_controller), "", RO),
    cmd!("del-controller", 1, 1, "BRIDGE", Some(cfg::cmd_del_controller), "", RW),
    cmd!("set-controller", 1, MANY, "BRIDGE TARGET...", Some(cfg::cmd_set_controller), "--inactivity-probe=", RW),
    cmd!("get-fail-mode", 1, 1, "BRIDGE", Some(cfg::cmd_get_fail_mode), "", RO),
    cmd!("del-fail-mode", 1, 1, "BRIDGE", Some(cfg::cmd_del_fail_mode), "", RW),
    cmd!("set-fail-mode", 2, 2, "BRIDGE MODE", Some(cfg::cmd_set_fail_mode), "", RW),
    // Managers.
    cmd!("get-manager", 0, 0, "", Some(cfg::cmd_get_manager), "", RO),
    cmd!("del-manager", 0, 0, "", Some(cfg::cmd_del_manager), "", RW),
    cmd!("set-manager", 1, MANY, "TARGET...", Some(cfg::cmd_set_manager), "--inactivity-probe=", RW),
    // SSL.
    cmd!("get-ssl", 0, 0, "", Some(cfg::cmd_get_ssl), "", RO),
    cmd!("del-ssl", 0, 0, "", Some(cfg::cmd_del_ssl), "", RW),
    cmd!("set-ssl", 3, 3, "PRIVATE-KEY CERTIFICATE CA-CERT", Some(cfg::cmd_set_ssl), "--bootstrap", RW),
    // Database commands.
    cmd!("comment", 0, MANY, "[ARG]...", None, "", RO),
    cmd!("get", 2, MANY, "TABLE RECORD [COLUMN[:KEY]]...", Some(db::cmd_get), "--if-exists,--id=", RO),
    cmd!("list", 1, MANY, "TABLE [RECORD]...", Some(db::cmd_list), "--if-exists,--columns=", RO),
    cmd!("find", 1, MANY, "TABLE [COLUMN[:KEY]=VALUE]...", Some(db::cmd_find), "--columns=", RO),
    cmd!("set", 3, MANY, "TABLE RECORD COLUMN[:KEY]=VALUE...", Some(db::cmd_set), "--if-exists", RW),
    cmd!("add", 4, MANY, "TABLE RECORD COLUMN [KEY=]VALUE...", Some(db::cmd_add), "--if-exists", RW),
    cmd!("remove", 4, MANY, "TABLE RECORD COLUMN KEY|VALUE|KEY=VALUE...", Some(db::cmd_remove), "--if-exists", RW),
    cmd!("clear", 3, MANY, "TABLE RECORD COLUMN...", Some(db::cmd_clear), "--if-exists", RW),
    cmd!("create", 2, MANY, "TABLE COLUMN[:KEY]=VALUE...", Some(db::cmd_create), "--id=", RW),
    cmd!("destroy", 1, MANY, "TABLE [RECORD]...", Some(db::cmd_destroy), "--if-exists,--all", RW),
    cmd!("wait-until", 2, MANY, "TABLE RECORD [COLUMN[:KEY]=VALUE]...", Some(db::cmd_wait_until), "", RO),
];

pub fn find_command(name: &str) -> Option<&'static CommandSyntax> {
    COMMANDS.iter().find(|c| c.name == name)
}
