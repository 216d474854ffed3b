//! The build sandbox (docs/sandbox.md): new user, mount, pid, net, uts and ipc
//! namespaces; a root assembled only from store objects; a fixed environment.
