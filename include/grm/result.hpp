// SPDX-License-Identifier: MIT
// The std::expected subset grm uses (C++23's std::expected is not in g++ 12's C++20).
#pragma once

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace grm {

/// An error from the kernel or from our own checks: a positive errno and what was being done.
struct Error {
    int code = 0; ///< positive errno, never -1
    std::string context;

    /// "context: strerror(code)"
    std::string message() const
    {
        return context.empty() ? std::string(std::strerror(code))
                               : context + ": " + std::strerror(code);
    }
};

template <typename E>
struct Unexpected {
    E error;
};

/// Makes the error side of a Result.
inline Unexpected<Error> unexpected(Error e)
{
    return {std::move(e)};
}
inline Unexpected<Error> unexpected(int code, std::string context)
{
    return {Error{code, std::move(context)}};
}

/// A value or an Error. Never throws: value() on an error and error() on a value abort (a
/// bug, not a condition).
template <typename T>
class [[nodiscard]] Result {
public:
    Result(T v) : v_(std::in_place_index<0>, std::move(v)) {}
    Result(Unexpected<Error> e) : v_(std::in_place_index<1>, std::move(e.error)) {}

    bool has_value() const { return v_.index() == 0; }
    explicit operator bool() const { return has_value(); }
    T& value() &
    {
        check();
        return *std::get_if<0>(&v_);
    }
    const T& value() const&
    {
        check();
        return *std::get_if<0>(&v_);
    }
    T&& value() &&
    {
        check();
        return std::move(*std::get_if<0>(&v_));
    }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    const Error& error() const
    {
        if (has_value())
            std::abort();
        return *std::get_if<1>(&v_);
    }
    T value_or(T other) const { return has_value() ? *std::get_if<0>(&v_) : std::move(other); }

private:
    void check() const
    {
        if (!has_value())
            std::abort();
    }
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Unexpected<Error> e) : err_(std::move(e.error)), failed_(true) {}

    bool has_value() const { return !failed_; }
    explicit operator bool() const { return has_value(); }
    const Error& error() const
    {
        if (!failed_)
            std::abort();
        return err_;
    }

private:
    Error err_;
    bool failed_ = false;
};

/// The error of a failed syscall: errno captured at once.
inline Unexpected<Error> errno_error(std::string context)
{
    return unexpected(errno, std::move(context));
}

} // namespace grm
