/* Every shape of CodeView type qualifier (LF_MODIFIER, pointer attributes) that Microsoft's
 * kernel PDBs use for the Driver Verifier counters (`volatile ULONG`), built with clang-cl so the
 * records come from someone else's CodeView writer. Regenerate with ./gen.sh. */
typedef unsigned long ULONG;
typedef unsigned char UCHAR;
typedef enum _COLOR { Red, Green } COLOR;
typedef struct _QUALIFIED {
    volatile ULONG Counter;              /* modifier -> primitive */
    const volatile ULONG Both;           /* two qualifiers in one modifier */
    volatile ULONG Flag : 3;             /* bitfield over a modifier */
    volatile ULONG Other : 5;
    const UCHAR Bytes[6];                /* array of const elements */
    volatile ULONG *PointerToVolatile;   /* pointee qualifier */
    ULONG *volatile VolatilePointer;     /* the pointer itself qualified */
    const volatile COLOR Color;          /* enum through a modifier */
    volatile struct _QUALIFIED *Self;    /* record (forward reference) through a modifier */
    ULONG __unaligned *UnalignedPointer; /* unaligned pointee */
    volatile ULONG Plain[2];             /* array of volatile elements */
} QUALIFIED;
QUALIFIED Instance;
int main(void) { return (int)Instance.Counter; }
