// interposer/stub.S: the only code of the interposer that executes the
// `syscall` instruction.  Everything between us_stub_begin and us_stub_end is
// the range given to PR_SET_SYSCALL_USER_DISPATCH (trap.cc, ArmTrap): calls
// made from here reach the kernel; every other syscall instruction of the
// program raises SIGSYS.  The same range is published to the driver
// (ControlBlock::stub_begin/stub_end) for the kmod escape audit.
//
// Keep this file to the three routines below: anything added between the two
// labels can make system calls unseen by the interposer.

  .text
  .p2align 4
  .globl us_stub_begin
  .hidden us_stub_begin

// long us_raw_syscall6(long nr, long a0, long a1, long a2, long a3, long a4,
//                      long a5): the System V call convention shifted into
// the kernel's (rax = nr, a3 in r10, the seventh argument from the stack).
  .globl us_raw_syscall6
  .hidden us_raw_syscall6
  .type us_raw_syscall6, @function
us_stub_begin:
us_raw_syscall6:
  movq %rdi, %rax
  movq %rsi, %rdi
  movq %rdx, %rsi
  movq %rcx, %rdx
  movq %r8, %r10
  movq %r9, %r8
  movq 8(%rsp), %r9
  .globl us_syscall_insn
  .hidden us_syscall_insn
us_syscall_insn:  // park.cc: a kick finds a thread blocked here
  syscall
  ret
  .size us_raw_syscall6, .-us_raw_syscall6

// void us_restorer(void): sa_restorer of every handler the interposer
// installs; rt_sigreturn (15) must be issued from inside the allowed range.
  .globl us_restorer
  .hidden us_restorer
  .type us_restorer, @function
us_restorer:
  movq $15, %rax
  syscall
  hlt
  .size us_restorer, .-us_restorer

// long us_clone_thread(long nr, long a0, long a1, long a2, long a3, long a4,
//                      const long* gregs, int* taken): a clone with a new
// stack issued by the program behind pthread_create's back.  The parent
// returns the kernel's result.  The child loads the interrupted context's
// registers from gregs (ucontext gregs layout: r8 r9 r10 r11 r12 r13 r14 r15
// rdi rsi rbp rbx rdx rax rcx rsp rip), sets *taken = 1 (the parent's
// SIGSYS frame, which holds gregs, may go away after that) and returns 0 in
// rax to the instruction after the program's syscall (its saved rip).
  .globl us_clone_thread
  .hidden us_clone_thread
  .type us_clone_thread, @function
us_clone_thread:
  push %r12
  push %r13
  mov 24(%rsp), %r12
  mov 32(%rsp), %r13
  movq %rdi, %rax
  movq %rsi, %rdi
  movq %rdx, %rsi
  movq %rcx, %rdx
  movq %r8, %r10
  movq %r9, %r8
  syscall
  test %rax, %rax
  jz 1f
  pop %r13
  pop %r12
  ret
1:
  pushq 128(%r12)
  mov 0(%r12), %r8
  mov 8(%r12), %r9
  mov 16(%r12), %r10
  mov 24(%r12), %r11
  mov 48(%r12), %r14
  mov 56(%r12), %r15
  mov 64(%r12), %rdi
  mov 72(%r12), %rsi
  mov 80(%r12), %rbp
  mov 88(%r12), %rbx
  mov 96(%r12), %rdx
  mov 112(%r12), %rcx
  mov %r13, %rax
  mov 40(%r12), %r13
  mov 32(%r12), %r12
  movl $1, (%rax)
  xor %eax, %eax
  ret
  .size us_clone_thread, .-us_clone_thread

  .globl us_stub_end
  .hidden us_stub_end
us_stub_end:
  nop

  .section .note.GNU-stack,"",@progbits
