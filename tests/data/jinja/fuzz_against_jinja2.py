#!/usr/bin/python3
"""Random templates rendered by jinja2 (the reference renderer) and by `tandem template`, compared.
Not part of the test suite (it needs Python's jinja2 and takes minutes); run it after changing the
lexer or the evaluator. Two kinds: "ws" (text and tags with random whitespace control, trim_blocks
and lstrip_blocks: outputs must be equal byte for byte) and "expr" (random expressions of literals,
operators, filters and tests: equal outputs, or both an error).
usage: /usr/bin/python3 tests/data/jinja/fuzz_against_jinja2.py BUILD/tandem ws|expr SEED COUNT
Known differences that "expr" reports: jinja2's filters that return generators (batch, unique,
items, map, ...) print as <generator ...> and fail lazily; jinja2 folds constant subscripts at
compile time (1[::-1] is undefined there, an error at run time); complex powers; Markup in lists.
"""
import os, random, subprocess, sys, tempfile

here = os.path.dirname(os.path.abspath(__file__))
renderer = os.path.join(here, "..", "..", "..", "..", "shared", "tools", "render_chat_template.py")
tandem, kind, seed, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
random.seed(seed)

TEXTS = ['', ' ', '  ', '\n', '\n\n', ' \n', '\n  ', '\t', 'a', 'b ', ' c\n', '\r\n', '  \t\n  x']


def mod():
    return random.choice(['', '', '-', '+'])


def ws_tag(depth):
    k = random.randint(0, 5)
    if k == 0:
        return '{{' + random.choice(['', '-']) + ' "v" ' + random.choice(['', '-']) + '}}'
    if k == 1:
        return '{#' + mod() + ' c ' + mod() + '#}'
    if k == 2:
        return '{%' + mod() + ' if true ' + mod() + '%}' + ws(depth - 1) + '{%' + mod() + ' endif ' + mod() + '%}'
    if k == 3:
        return '{%' + mod() + ' for i in [1, 2] ' + mod() + '%}' + ws(depth - 1) + '{%' + mod() + ' endfor ' + mod() + '%}'
    if k == 4:
        return '{%' + mod() + ' set x = 1 ' + mod() + '%}'
    return ('{%' + mod() + ' raw ' + mod() + '%}' + random.choice(TEXTS) + '{{ y }}' + random.choice(TEXTS) +
            '{%' + mod() + ' endraw ' + mod() + '%}')


def ws(depth=3):
    out = ''
    for _ in range(random.randint(1, 4)):
        out += random.choice(TEXTS)
        if depth > 0 and random.random() < 0.7:
            out += ws_tag(depth)
    return out


LITS = ['0', '1', '2', '-3', '7', '2.5', '0.1', '1e3', '-0.5', "'a'", "'Bc'", "''", "' x '", "'é雪'", 'none',
        'true', 'false', '[1, 2]', "['b', 'a']", '[]', "{'k': 1}", '{}', '(1, 2)', 'undefined_name', 'messages',
        'messages[0]', 'messages[0].content']
OPS = ['+', '-', '*', '/', '//', '%', '**', '~', '==', '!=', '<', '>=', 'and', 'or', 'in', 'not in']
FILTERS = ['length', 'string', 'int', 'float', 'abs', 'round', 'upper', 'lower', 'list', 'first', 'last', 'join',
           "join('-')", 'sort', 'tojson', 'trim', "default('d')", 'sum', 'min', 'max', 'capitalize', 'title',
           'count', 'dictsort', "replace('a', 'z')", 'wordcount', 'indent(2)', 'e']
TESTS = ['defined', 'none', 'string', 'number', 'integer', 'float', 'mapping', 'iterable', 'sequence', 'odd',
         'even', 'boolean', 'true', 'false', 'equalto 1', 'lower', 'upper']


def expr(d=3):
    r = random.random()
    if d <= 0 or r < 0.25:
        return random.choice(LITS)
    if r < 0.5:
        return '(' + expr(d - 1) + ' ' + random.choice(OPS) + ' ' + expr(d - 1) + ')'
    if r < 0.65:
        return '(' + expr(d - 1) + ' | ' + random.choice(FILTERS) + ')'
    if r < 0.75:
        return '(' + expr(d - 1) + ' is ' + random.choice(['', 'not ']) + random.choice(TESTS) + ')'
    if r < 0.82:
        return '(not ' + expr(d - 1) + ')'
    if r < 0.9:
        return '(' + expr(d - 1) + ' if ' + expr(d - 1) + ' else ' + expr(d - 1) + ')'
    if r < 0.95:
        return expr(d - 1) + '[' + random.choice(['0', '-1', "'k'"]) + ']'
    return '[' + expr(d - 1) + ', ' + expr(d - 1) + ']'


tmp = tempfile.mkdtemp()
case = os.path.join(tmp, 'case.json')
with open(case, 'w') as f:
    f.write('{"messages": [{"role": "user", "content": "Hi"}]}')
bad = 0
for n in range(count):
    src = ws() if kind == 'ws' else '{{ ' + expr() + ' }}'
    path = os.path.join(tmp, 't.jinja')
    with open(path, 'w', newline='') as f:
        f.write(src)
    py = subprocess.run(['/usr/bin/python3', renderer, path, case], capture_output=True)
    me = subprocess.run([tandem, 'template', '--template', path, case], capture_output=True)
    same = py.returncode == 0 and me.returncode == 0 and py.stdout == me.stdout
    if not same and not (py.returncode != 0 and me.returncode != 0):
        bad += 1
        print('MISMATCH', repr(src), '\n  jinja2:', py.returncode, repr(py.stdout[:200]), py.stderr.decode()[-200:],
              '\n  tandem:', me.returncode, repr(me.stdout[:200]), me.stderr.decode()[:200])
print(f'{count} templates, {bad} mismatches')
