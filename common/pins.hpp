// SPDX-License-Identifier: MIT
// Layout of grm's pin directory (default /sys/fs/bpf/grm), shared by grmd and grmctl:
//   maps/<map name>            every map; they outlive grmd, so a restart loses nothing
//   progs/<hook>               the programs, for `grmd --install` run as a separate process
//   links/<cgroup inode>_<hook> one bpf_link per hook per installed cgroup
//   xdp/<map name>             the XDP tier's maps (grmd --hosts): made by each grmd, removed
//                              when it exits
#pragma once

#include <string>

namespace grm::pins {

inline constexpr const char* kDefaultDir = "/sys/fs/bpf/grm";

inline std::string map(const std::string& dir, const std::string& name)
{
    return dir + "/maps/" + name;
}
inline std::string prog(const std::string& dir, const std::string& hook)
{
    return dir + "/progs/" + hook;
}
inline std::string xdp_map(const std::string& dir, const std::string& name)
{
    return dir + "/xdp/" + name;
}
inline std::string links_dir(const std::string& dir)
{
    return dir + "/links";
}
inline std::string link(const std::string& dir, unsigned long long cg_inode,
                        const std::string& hook)
{
    return links_dir(dir) + "/" + std::to_string(cg_inode) + "_" + hook;
}

} // namespace grm::pins
