/*
 * A stand-in for Windows' bcryptprimitives.dll under Wine 8, which lacks it.
 *
 * Rust's std (1.78 and later) imports ProcessPrng from bcryptprimitives.dll for its random
 * numbers (HashMap seeds); without the DLL a Rust program does not start under Wine 8. This
 * forwards to advapi32's RtlGenRandom (SystemFunction036), which Wine has. Test harness only:
 * never shipped with wfcgi.exe (Windows itself has the real DLL).
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
