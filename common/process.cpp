// SPDX-License-Identifier: MIT
#include "process.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <signal.h>
#include <thread>
#include <unistd.h>

#include <sys/prctl.h>
#include <sys/wait.h>

namespace grm::proc {
namespace {

std::vector<char*> c_strings(const std::vector<std::string>& v)
{
    std::vector<char*> out;
    out.reserve(v.size() + 1);
    for (const auto& s : v)
        out.push_back(const_cast<char*>(s.c_str()));
    out.push_back(nullptr);
    return out;
}

/// Writes n in decimal and a NUL at out (room for 21 bytes), async-signal-safe.
void write_decimal(char* out, unsigned long n)
{
    char digits[20];
    int len = 0;
    do {
        digits[len++] = static_cast<char>('0' + n % 10);
        n /= 10;
    } while (n != 0);
    while (len > 0)
        *out++ = digits[--len];
    *out = '\0';
}

bool redirect(int fd, const std::string& file, int target)
{
    if (fd >= 0)
        return ::dup2(fd, target) == target;
    if (file.empty())
        return true;
    int f = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    return f >= 0 && ::dup2(f, target) == target;
}

} // namespace

Result<pid_t> spawn(const SpawnOptions& o)
{
    if (o.argv.empty())
        return unexpected(EINVAL, "spawn: empty argv");
    // Everything the child needs is built before fork: between fork and exec only
    // async-signal-safe calls.
    std::vector<char*> argv = c_strings(o.argv);
    // listen_pid: only the child knows its pid, so its LISTEN_PID entry is made here with
    // room for the digits, which the child writes in.
    const bool own_env = o.env || o.listen_pid;
    std::vector<std::string> env;
    if (o.env)
        env = *o.env;
    else if (o.listen_pid)
        for (char** e = environ; *e; e++)
            env.emplace_back(*e);
    if (o.listen_pid) {
        std::erase_if(env, [](const std::string& e) { return e.starts_with("LISTEN_PID="); });
        env.push_back("LISTEN_PID=" + std::string(21, '\0'));
    }
    std::vector<char*> envp = own_env ? c_strings(env) : std::vector<char*>{};
    char* pid_digits = o.listen_pid ? envp[envp.size() - 2] + std::strlen("LISTEN_PID=") : nullptr;
    std::string procs = o.cgroup.empty() ? "" : o.cgroup + "/cgroup.procs";
    // exec_error: the child writes a failed exec's errno here; a successful exec closes it.
    int errpipe[2] = {-1, -1};
    if (o.exec_error && ::pipe2(errpipe, O_CLOEXEC) != 0)
        return errno_error("pipe2");
    pid_t pid = ::fork();
    if (pid < 0) {
        Error e{errno, "fork " + o.argv[0]};
        if (o.exec_error) {
            ::close(errpipe[0]);
            ::close(errpipe[1]);
        }
        return unexpected(std::move(e));
    }
    if (pid > 0) {
        if (!o.exec_error)
            return pid;
        ::close(errpipe[1]);
        int err = 0;
        ssize_t n;
        while ((n = ::read(errpipe[0], &err, sizeof(err))) < 0 && errno == EINTR) {
        }
        ::close(errpipe[0]);
        if (n != static_cast<ssize_t>(sizeof(err)))
            return pid; // closed by the exec (or a failed step before it: the child exits 126)
        while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
        return unexpected(err, "cannot execute " + o.argv[0]);
    }
    if (!procs.empty()) {
        int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ::write(fd, "0", 1) != 1)
            ::_exit(126);
        ::close(fd);
    }
    if (!redirect(o.stdout_fd, o.stdout_file, 1))
        ::_exit(126);
    if (o.stderr_to_stdout ? ::dup2(1, 2) != 2 : !redirect(o.stderr_fd, o.stderr_file, 2))
        ::_exit(126);
    if (o.pdeathsig != 0 && ::prctl(PR_SET_PDEATHSIG, o.pdeathsig) != 0)
        ::_exit(126);
    if (o.in_child)
        o.in_child();
    if (pid_digits)
        write_decimal(pid_digits, static_cast<unsigned long>(::getpid()));
    if (own_env)
        environ = envp.data();
    if (o.search_path)
        ::execvp(argv[0], argv.data());
    else
        ::execv(argv[0], argv.data());
    if (errpipe[1] >= 0) {
        int err = errno;
        (void)!::write(errpipe[1], &err, sizeof(err));
    }
    ::_exit(127);
}

std::optional<int> wait_exit(pid_t pid, std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    auto pause = std::chrono::milliseconds(1);
    for (;;) {
        int status = 0;
        pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1; // not our child (or already reaped): nothing to wait for
        if (std::chrono::steady_clock::now() >= deadline)
            return std::nullopt;
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::milliseconds(20));
    }
}

std::string describe_status(int status)
{
    if (WIFEXITED(status))
        return "exit status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        const char* name = ::sigabbrev_np(WTERMSIG(status));
        std::string s = name ? std::string("killed by SIG") + name
                             : "killed by signal " + std::to_string(WTERMSIG(status));
        return WCOREDUMP(status) ? s + " (core dumped)" : s;
    }
    return "wait status " + std::to_string(status);
}

int stop(pid_t pid, int sig)
{
    int status = -1;
    if (pid <= 0)
        return status;
    // Continue it first, never after sig: a SIGCONT that lands while a sanitized process's
    // LeakSanitizer ptrace-attaches to itself at exit discards the attach's SIGSTOP, and
    // LeakSanitizer then waits for that stop forever.
    ::kill(pid, SIGCONT);
    ::kill(pid, sig);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

Result<RunResult> run(const std::vector<std::string>& argv)
{
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0)
        return errno_error("pipe2");
    SpawnOptions o;
    o.argv = argv;
    o.stdout_fd = pipefd[1];
    o.stderr_to_stdout = true;
    auto pid = spawn(o);
    ::close(pipefd[1]);
    if (!pid) {
        ::close(pipefd[0]);
        return unexpected(pid.error());
    }
    RunResult r;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(pipefd[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
        if (n > 0)
            r.output.append(buf, static_cast<size_t>(n));
    ::close(pipefd[0]);
    while (::waitpid(*pid, &r.status, 0) < 0 && errno == EINTR) {
    }
    return r;
}

} // namespace grm::proc
