/* The agent's fixed entry points (agent_abi.h: US_AGENT_OFF_*), first in
 * its text, and its two syscall stubs: one in the text (its calls run, the
 * filter allows calls from here) and one on the trace page (its calls stop
 * for the tracer). */
        .section .text.entry, "ax"
        .globl us_call
/* +0: the tracer's injected calls */
us_gadget:
        syscall
        int3
        .balign 16
/* +16: a patched call site's stub calls here (`call *%r11`, the red zone
 * already skipped): rax the call's number, its arguments in rdi, rsi, rdx,
 * r10, r8, r9 -- the syscall convention, and like a syscall it returns the
 * result in rax and may change rcx and r11 only (the flags are kept). */
us_call:
        pushfq
        push %rdi
        push %rsi
        push %rdx
        push %r8
        push %r9
        push %r10
        push %rbp
        mov %rsp, %rbp
        push %r9                        /* a[5] .. a[0] */
        push %r8
        push %r10
        push %rdx
        push %rsi
        push %rdi
        mov %rsp, %rsi
        mov %rax, %rdi
        and $-16, %rsp
        call us_agent
        mov %rbp, %rsp
        pop %rbp
        pop %r10
        pop %r9
        pop %r8
        pop %rdx
        pop %rsi
        pop %rdi
        popfq
        ret
        .balign 16
/* long us_raw(long nr, long a0, long a1, long a2, long a3, long a4, long a5) */
        .text
        .globl us_raw
us_raw:
        mov %rdi, %rax
        mov %rsi, %rdi
        mov %rdx, %rsi
        mov %rcx, %rdx
        mov %r8, %r10
        mov %r9, %r8
        mov 8(%rsp), %r9
        syscall
        ret

/* long us_traced(...): the same, from the trace page */
        .section .agent_trace, "ax"
        .globl us_traced
us_traced:
        mov %rdi, %rax
        mov %rsi, %rdi
        mov %rdx, %rsi
        mov %rcx, %rdx
        mov %r8, %r10
        mov %r9, %r8
        mov 8(%rsp), %r9
        syscall
        ret
        .section .note.GNU-stack, "", @progbits
