const isNumber = require('is-number');
console.log(`is-number says 42 is a number: ${isNumber(42)}`);
