/*
 * Url-encoded logutriga rows straight to COPY text, without Python objects
 * for the values.
 *
 * encode(data) takes ev_data ("name=value&name&...") and returns
 * (names, line): names is the row's encoded names joined by '&', line the
 * values as one COPY text line without its newline. A name without '=' is
 * NULL (\N), '+' is a space and %XX is a byte. Empty pieces between '&' are
 * skipped. The bytes of the line must be UTF-8.
 *
 * It returns None for anything else: an empty name, a raw '=' inside a
 * value, a malformed %-escape, a NUL byte, bytes that are not UTF-8, or
 * text with a lone surrogate.
 * The caller then decodes the row in Python, which raises the precise error.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Recently returned names objects, reused when a row has the same names, so
 * that the caller's dictionary lookup finds their hash already computed. */
#define NAMES_CACHE 8
static PyObject *recent_names[NAMES_CACHE];
static int next_slot;

static int
hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Return the letter that follows a backslash for byte C in COPY text, or 0
 * when C stands for itself. */
static char
escape_letter(unsigned char c)
{
    switch (c) {
    case '\\':
        return '\\';
    case '\t':
        return 't';
    case '\n':
        return 'n';
    case '\r':
        return 'r';
    default:
        return 0;
    }
}

/* Append the decoded, COPY-escaped value VALUE..END to OUT. Return the new
 * end of OUT, or NULL when the value cannot be encoded here. */
static char *
copy_value(char *out, const char *value, const char *end)
{
    for (; value < end; value++) {
        unsigned char c = (unsigned char) *value;
        char letter;

        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int high, low;

            if (end - value < 3)
                return NULL;
            high = hex_digit((unsigned char) value[1]);
            low = hex_digit((unsigned char) value[2]);
            if (high < 0 || low < 0)
                return NULL;
            c = (unsigned char) (high * 16 + low);
            value += 2;
        } else if (c == '=') {
            return NULL;
        }
        if (c == 0)
            return NULL;
        letter = escape_letter(c);
        if (letter != 0) {
            *out++ = '\\';
            c = (unsigned char) letter;
        }
        *out++ = (char) c;
    }
    return out;
}

/* Return a names object for NAMES..+LENGTH, reusing a recent one. */
static PyObject *
names_object(const char *names, Py_ssize_t length)
{
    PyObject *result;
    int slot;

    for (slot = 0; slot < NAMES_CACHE; slot++) {
        PyObject *known = recent_names[slot];

        if (known != NULL && PyUnicode_GET_LENGTH(known) == length
                && memcmp(PyUnicode_DATA(known), names, length) == 0) {
            Py_INCREF(known);
            return known;
        }
    }
    result = PyUnicode_DecodeUTF8(names, length, "strict");
    if (result == NULL || !PyUnicode_IS_ASCII(result))
        return result;
    Py_XDECREF(recent_names[next_slot]);
    Py_INCREF(result);
    recent_names[next_slot] = result;
    next_slot = (next_slot + 1) % NAMES_CACHE;
    return result;
}

static PyObject *
rowcopy_encode(PyObject *module, PyObject *arg)
{
    const char *data, *piece, *end;
    char *line = NULL, *out, *names = NULL;
    Py_ssize_t size, names_length = 0;
    PyObject *line_object = NULL, *names_str = NULL, *result = NULL;
    int fields = 0;

    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "encode() expects a str");
        return NULL;
    }
    data = PyUnicode_AsUTF8AndSize(arg, &size);
    if (data == NULL) {
        /* A lone surrogate has no UTF-8 form: the Python path reports it. */
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }

    /* A byte becomes at most two, and a NULL name of one byte plus its
     * separator becomes three bytes out of two. */
    line = PyMem_Malloc(2 * size + 2);
    names = PyMem_Malloc(size + 1);
    if (line == NULL || names == NULL) {
        PyErr_NoMemory();
        goto done;
    }

    out = line;
    end = data + size;
    for (piece = data; piece < end;) {
        const char *piece_end = memchr(piece, '&', end - piece);
        const char *equals, *name_end;

        if (piece_end == NULL)
            piece_end = end;
        if (piece_end == piece) {
            piece++;
            continue;
        }
        equals = memchr(piece, '=', piece_end - piece);
        name_end = equals != NULL ? equals : piece_end;
        if (name_end == piece)
            goto fall_back;

        if (fields > 0) {
            names[names_length++] = '&';
            *out++ = '\t';
        }
        memcpy(names + names_length, piece, name_end - piece);
        names_length += name_end - piece;
        if (equals == NULL) {
            *out++ = '\\';
            *out++ = 'N';
        } else {
            out = copy_value(out, equals + 1, piece_end);
            if (out == NULL)
                goto fall_back;
        }
        fields++;
        if (piece_end == end)
            break;
        piece = piece_end + 1;
    }

    line_object = PyUnicode_DecodeUTF8(line, out - line, "strict");
    if (line_object == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            goto done;
        PyErr_Clear();
        goto fall_back;
    }
    names_str = names_object(names, names_length);
    if (names_str == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            goto done;
        PyErr_Clear();
        goto fall_back;
    }
    result = PyTuple_Pack(2, names_str, line_object);
    goto done;

fall_back:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(line_object);
    Py_XDECREF(names_str);
    PyMem_Free(line);
    PyMem_Free(names);
    return result;
}

static PyMethodDef rowcopy_methods[] = {
    {"encode", rowcopy_encode, METH_O,
     "encode(data) -> (names, line) or None\n\n"
     "Return a url-encoded row's names and its values as COPY text."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef rowcopy_module = {
    PyModuleDef_HEAD_INIT, "_rowcopy",
    "Url-encoded logutriga rows to COPY text.", -1, rowcopy_methods
};

PyMODINIT_FUNC
PyInit__rowcopy(void)
{
    return PyModule_Create(&rowcopy_module);
}
