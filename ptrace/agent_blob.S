/* The in-process agent's flat image (ptrace/agent/, built by CMake), as
 * bytes in the tracer (agent.cc places them into the program). */
        .section .rodata
        .balign 16
        .globl understudy_agent_image
        .globl understudy_agent_image_end
understudy_agent_image:
        .incbin AGENT_BIN
understudy_agent_image_end:
        .section .note.GNU-stack, "", @progbits
