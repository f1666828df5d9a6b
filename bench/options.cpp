// SPDX-License-Identifier: MIT
#include "options.hpp"

#include <chrono>
#include <getopt.h>
#include <sstream>

#include <fmt/core.h>

#include "cli.hpp"

#ifndef GRM_GRMD_PATH
#define GRM_GRMD_PATH "grmd"
#endif

namespace grm::bench {

const char* const kUsage =
    "usage: grm-bench [options]            (needs root; runs in a sandbox of its own)\n"
    "  --flows N        client flows, each its own socket and port (default 1000)\n"
    "  --size BYTES     UDP payload size, >= 8 (default 64)\n"
    "  --rate PPS       send at most PPS packets/s; 0 = as fast as possible (default 0;\n"
    "                   50000 with --restart)\n"
    "  --seconds S      per setup per round: 1/3 cost phase, 2/3 rate phase (default 1;\n"
    "                   with --restart the length of each restart run, default 3)\n"
    "  --rounds N       rounds over all setups (default 5)\n"
    "  --receivers N    sockets in the receiving group, 1..256 (default 4)\n"
    "  --batch N        messages per sendmmsg / recvmmsg call (default 32)\n"
    "  --setups LIST    comma-separated subset of: plain,floor,floor-sockhash,\n"
    "                   floor-sockmap,floor-sets,floor-tail,floor-tail2,noop,flow,\n"
    "                   cid,cbpf (default all), and the ladder's rungs, each grm's\n"
    "                   path cut after one step: ladder-entry,ladder-select,\n"
    "                   ladder-group,ladder-counters,ladder-peer,ladder-parse;\n"
    "                   \"ladder\" names them with floor,floor-sets,noop,flow,cid\n"
    "  --json FILE      also write the results as JSON\n"
    "  --grmd PATH      grmd to start (default this build's, " GRM_GRMD_PATH ")\n"
    "  --daemon CMD     start CMD instead of grmd: another udpgrm-ABI daemon, the same\n"
    "                   setups and traffic; {cgroup} {pin_dir} {bpffs} in CMD are replaced\n"
    "                   by the sandbox's (its bpffs is also mounted on /sys/fs/bpf)\n"
    "  --flow-entries N grmd's FLOW table size (default grmd's; --scale flows: 2097152)\n"
    "  --rx-bound       receive-bound throughput: a raw sender on the first CPU, the\n"
    "                   receive path (RPS on lo) and the receiver on the second; per\n"
    "                   setup the loss-free rate, found by a bisection over paced trials\n"
    "                   of --seconds each (default 0.4); --rate caps the search (default:\n"
    "                   the flat-out sending rate)\n"
    "  --steps N        --rx-bound: bisection steps per setup per round, 1..20 (default 7)\n"
    "  --retries N      --rx-bound: a failed step is tried N more times, 0..5 (default 1)\n"
    "  --rx-flood       --rx-bound without the search: flat-out rounds (the older method)\n"
    "  --scale WHAT     a scaling table instead, one of: flows (1k/100k/1M live flows),\n"
    "                   groups (1/100/1000), sockets (1/16/256 per generation), gens\n"
    "                   (1/8/32 live generations), newflows (every packet a new flow)\n"
    "  --nice N         nice value of the sender and receiver threads, -20..19 (default 0;\n"
    "                   on a busy machine -20 keeps them from sharing their CPUs)\n"
    "  --restart        restart under load instead: grm (NOOP) and plain SO_REUSEPORT\n";

namespace {

/// Parses `s` into `out` as a T in [min, max].
template <typename T>
Result<void> whole(const char* s, const char* what, T min, T max, T& out)
{
    auto v = cli::parse<T>(s, what, min, max);
    if (!v)
        return unexpected(v.error());
    out = *v;
    return {};
}

/// --seconds: a duration ("0.5", "500ms"; bare numbers are seconds) from 10 ms to an hour.
Result<double> seconds(const char* s)
{
    auto d = cli::parse_duration(s, "--seconds");
    if (!d)
        return unexpected(d.error());
    if (*d < std::chrono::milliseconds(10) || *d > std::chrono::hours(1))
        return unexpected(ERANGE, fmt::format("--seconds: '{}' is out of range 0.01..3600", s));
    return std::chrono::duration<double>(*d).count();
}

std::vector<std::string> split_list(const char* s)
{
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string name;
    while (std::getline(ss, name, ','))
        if (!name.empty())
            out.push_back(name);
    return out;
}

} // namespace

Result<Options> parse_options(int argc, char** argv)
{
    Options o;
    o.grmd = GRM_GRMD_PATH;
    enum {
        kFlows = 1000,
        kSize,
        kRate,
        kSeconds,
        kRounds,
        kReceivers,
        kBatch,
        kSetups,
        kJson,
        kGrmd,
        kDaemon,
        kFlowEntries,
        kRxBound,
        kRxFlood,
        kSteps,
        kRetries,
        kNice,
        kScale,
        kRestart,
        kHelp
    };
    static const option longopts[] = {
        {"flows", required_argument, nullptr, kFlows},
        {"size", required_argument, nullptr, kSize},
        {"rate", required_argument, nullptr, kRate},
        {"seconds", required_argument, nullptr, kSeconds},
        {"rounds", required_argument, nullptr, kRounds},
        {"receivers", required_argument, nullptr, kReceivers},
        {"batch", required_argument, nullptr, kBatch},
        {"setups", required_argument, nullptr, kSetups},
        {"json", required_argument, nullptr, kJson},
        {"grmd", required_argument, nullptr, kGrmd},
        {"daemon", required_argument, nullptr, kDaemon},
        {"flow-entries", required_argument, nullptr, kFlowEntries},
        {"rx-bound", no_argument, nullptr, kRxBound},
        {"rx-flood", no_argument, nullptr, kRxFlood},
        {"steps", required_argument, nullptr, kSteps},
        {"retries", required_argument, nullptr, kRetries},
        {"nice", required_argument, nullptr, kNice},
        {"scale", required_argument, nullptr, kScale},
        {"restart", no_argument, nullptr, kRestart},
        {"help", no_argument, nullptr, kHelp},
        {},
    };
    bool rate_given = false, seconds_given = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, nullptr)) != -1) {
        Result<void> r;
        switch (c) {
        case kFlows:
            r = whole(optarg, "--flows", 1, 20000, o.flows);
            break;
        case kSize:
            r = whole<size_t>(optarg, "--size", 8, 65507, o.size);
            break;
        case kRate: {
            uint64_t pps = 0;
            r = whole<uint64_t>(optarg, "--rate", 0, 1000000000, pps);
            o.rate = static_cast<double>(pps);
            rate_given = true;
            break;
        }
        case kSeconds: {
            auto s = seconds(optarg);
            if (!s)
                return unexpected(s.error());
            o.seconds = *s;
            seconds_given = true;
            break;
        }
        case kRounds:
            r = whole(optarg, "--rounds", 1, 1000, o.rounds);
            break;
        case kReceivers:
            r = whole(optarg, "--receivers", 1, 256, o.receivers);
            break;
        case kBatch:
            r = whole(optarg, "--batch", 1, 1024, o.batch);
            break;
        case kSetups:
            o.setups = split_list(optarg);
            break;
        case kJson:
            o.json = optarg;
            break;
        case kGrmd:
            o.grmd = optarg;
            break;
        case kDaemon:
            o.daemon = optarg;
            break;
        case kFlowEntries:
            r = whole<uint32_t>(optarg, "--flow-entries", 1, 1u << 24, o.flow_entries);
            break;
        case kRxBound:
            o.rx_bound = true;
            break;
        case kRxFlood:
            o.rx_bound = o.rx_flood = true;
            break;
        case kSteps:
            r = whole(optarg, "--steps", 1, 20, o.steps);
            break;
        case kRetries:
            r = whole(optarg, "--retries", 0, 5, o.retries);
            break;
        case kNice:
            r = whole(optarg, "--nice", -20, 19, o.nice);
            break;
        case kScale:
            o.scale = optarg;
            if (o.scale != "flows" && o.scale != "groups" && o.scale != "sockets" &&
                o.scale != "gens" && o.scale != "newflows")
                return unexpected(EINVAL, fmt::format("--scale: unknown '{}'", o.scale));
            break;
        case kRestart:
            o.restart = true;
            break;
        case kHelp:
        case 'h':
            o.help = true;
            return o;
        default: // getopt_long has said what was wrong
            return unexpected(EINVAL, "");
        }
        if (!r)
            return unexpected(r.error());
    }
    if (optind < argc)
        return unexpected(EINVAL, fmt::format("unexpected argument '{}'", argv[optind]));
    if (int modes = o.restart + o.rx_bound + !o.scale.empty(); modes > 1)
        return unexpected(EINVAL, "--restart, --rx-bound and --scale exclude each other");
    if (!o.daemon.empty() && (o.restart || !o.scale.empty()))
        return unexpected(EINVAL, "--daemon goes with the comparison table (and --rx-bound)");
    if (o.rx_bound && !o.rx_flood && !seconds_given)
        o.seconds = 0.4; // one trial
    if (o.restart) {
        // Restart runs count losses: an uncapped sender would overflow receive queues and
        // blur what the restart itself lost.
        if (!rate_given)
            o.rate = 50000;
        if (!seconds_given)
            o.seconds = 3;
    }
    return o;
}

} // namespace grm::bench
